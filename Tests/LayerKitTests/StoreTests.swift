import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

// The layer store: imports from OCI layouts (busybox fixture and layouts built here), sharing of
// layers between images, crash safety (the CLI killed at random moments and at every named
// crash point), two processes importing at once, and ls/rm/gc through the CLI. Expected chainIDs
// come from the layouts' configs, hashed here (DigestOracle). MetadataStoreTests has the SQLite
// wrapper and its migrations.

// MARK: - Helpers

/// The images the store tests import, built by hand: layers from TarBuilder compressed with
/// gzip(1), busybox's layers, and a big image to kill imports in.
private enum StoreImages {
    /// A gzip layer made with TarBuilder (the tar) and gzip(1) (the compression); the diffID is
    /// hashed here from the tar bytes.
    static func gzipLayer(_ entries: [TarEntry], scratch: String) throws -> TestLayout.Layer {
        let tar = Data(TarBuilder.build(entries))
        let id = UUID().uuidString
        let tarPath = scratch + "/\(id).tar", gzPath = scratch + "/\(id).tar.gz"
        try tar.write(to: URL(fileURLWithPath: tarPath))
        let r = try run("/bin/sh", ["-c", "\"$1\" -n -1 -c \"$2\" > \"$3\"", "sh", try requireTool("gzip"), tarPath, gzPath])
        try #require(r.status == 0, "gzip failed: \(r.stderr)")
        let blob = try #require(FileManager.default.contents(atPath: gzPath))
        try? FileManager.default.removeItem(atPath: tarPath)
        try? FileManager.default.removeItem(atPath: gzPath)
        return TestLayout.Layer(blob: blob, diffID: DigestOracle.sha256(tar), mediaType: ImageSpec.gzipLayerMediaType)
    }

    /// Layer `index` (0-based) of the busybox fixture, with its diffID from the fixture's config.
    static func busyboxLayer(_ index: Int) throws -> TestLayout.Layer {
        let layout = BusyboxFixture.layout
        let descriptor = try TestLayout.manifest(of: layout).layers[index]
        let blob = try #require(FileManager.default.contents(atPath: TestLayout.blobPath(layout, descriptor.digest)))
        return TestLayout.Layer(blob: blob, diffID: try TestLayout.diffIDs(of: layout)[index], mediaType: descriptor.mediaType)
    }

    /// `count` deterministic pseudo-random bytes (SplitMix64), incompressible enough that gzip
    /// keeps the blob about as big as the data.
    static func noise(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededRandom(state: seed &+ 0x9E37_79B9_7F4A_7C15)
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count {
            withUnsafeBytes(of: rng.next()) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(count))
    }

    static func file(_ path: String, bytes: Int, seed: UInt64) -> TarEntry {
        TarEntry(kind: .file, path: path, content: noise(bytes, seed: seed))
    }

    /// Writes a three-layer image of about 7 MB tagged `tag` at `layout`, so an import takes long
    /// enough to be killed midway. Layer 2 whites out and hardlinks files of layer 1 (the hardlink
    /// is copied up) and makes a dir opaque; layer 3 is small.
    static func big(_ layout: String, scratch: String, tag: String = "big") throws {
        var base: [TarEntry] = [.dir("data"), .dir("data/keep"), .dir("data/opq"), .dir("blobs")]
        for i in 0..<240 { base.append(file("data/f\(i)", bytes: 8_192 + i * 13, seed: UInt64(i))) }
        for i in 0..<20 { base.append(file("data/opq/o\(i)", bytes: 2_000, seed: 1_000 + UInt64(i))) }
        for i in 0..<5 { base.append(file("blobs/big\(i)", bytes: 1 << 20, seed: 2_000 + UInt64(i))) }
        base.append(.file("data/keep/readme", "kept\n"))
        var middle: [TarEntry] = [.dir("data"), .whiteout("data", "f0"), .whiteout("data", "f1"),
                                  .dir("data/opq"), .opaque("data/opq"), .file("data/opq/new", "new\n"),
                                  .hardlink("data/f2-link", "data/f2"), .dir("more")]
        for i in 0..<120 { middle.append(file("more/m\(i)", bytes: 4_096, seed: 3_000 + UInt64(i))) }
        let top: [TarEntry] = [.dir("etc"), .file("etc/top", "top layer\n"), .whiteout("", "blobs")]
        let layers = [try gzipLayer(base, scratch: scratch), try gzipLayer(middle, scratch: scratch), try gzipLayer(top, scratch: scratch)]
        try TestLayout.write(layout, layers: layers, tag: tag)
    }
}

/// Checks of a store's files and records, made from the outside (file system + the records as
/// the library reads them), independent of `LayerStore.verify`.
private enum StoreCheck {
    static func entries(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    /// Problems in an opened store; empty when it is consistent.
    static func problems(_ store: LayerStore) throws -> [String] {
        var problems = [String]()
        let p = store.paths
        let staging = entries(p.stagingDir)
        if !staging.isEmpty { problems.append("staging leftovers: \(staging)") }
        let records = try store.layers()
        let recorded = Set(records.map(\.chainID.hex))
        for name in entries(p.layersDir) where !recorded.contains(name) { problems.append("layer dir without record: \(name)") }
        for layer in records {
            var st = stat()
            if lstat(p.diffDir(layer.chainID), &st) != 0 || st.st_mode & 0o170000 != 0o040000 {
                problems.append("record without diff dir: \(layer.chainID)")
            }
            if contents(p.linkFile(layer.chainID)) != layer.link { problems.append("link file of \(layer.chainID) does not say \(layer.link)") }
            let resolved = resolvedPath(p.shortLink(layer.link))
            let diff = resolvedPath(p.diffDir(layer.chainID))
            if resolved == nil || resolved != diff { problems.append("l/\(layer.link) does not resolve to the diff dir of \(layer.chainID)") }
        }
        let links = Set(records.map(\.link))
        for name in entries(p.linksDir) where !links.contains(name) { problems.append("l/\(name) belongs to no record") }
        return problems
    }

    /// A layer dir's snapshot. Whiteouts (0/0 char devices) are made at apply time, so their
    /// mtime is not compared; everything else is.
    static func snapshot(_ dir: String) -> TreeSnapshot {
        var snapshot = TreeSnapshot(dir)
        for (path, node) in snapshot.nodes where node.type == "char" && node.content == "0:0" {
            snapshot.nodes[path]?.mtime = nil
        }
        return snapshot
    }

    /// Snapshots of every layer's diff dir, by chainID.
    static func snapshots(_ store: LayerStore) throws -> [LayerKit.Digest: TreeSnapshot] {
        var out = [LayerKit.Digest: TreeSnapshot]()
        for layer in try store.layers() { out[layer.chainID] = snapshot(store.paths.diffDir(layer.chainID)) }
        return out
    }
}

private func statOf(_ path: String) throws -> stat {
    try #require(lstatOrNil(path), "\(path) does not exist")
}

private func parseDigest(_ text: String) throws -> LayerKit.Digest { try LayerKit.Digest(parsing: text) }

// MARK: - Import

@Suite(.requires(.root(because: "overlay-format layers: char device whiteouts, trusted.* xattrs")))
struct StoreTests {
    @Test func importBusyboxWritesOverlayLayersRecordsAndLinks() throws {
        let tmp = TempDir()
        let store = try LayerStore(root: tmp.sub("store"))
        let result = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")

        let expected = try DigestOracle.chainIDs(TestLayout.diffIDs(of: BusyboxFixture.layout)).map(parseDigest)
        #expect(expected.count == 2)
        #expect(result.layers.map(\.chainID) == expected)
        #expect(result.layers.allSatisfy(\.unpacked) && result.unpackedCount == 2)
        #expect(result.image.name == "latest")
        #expect(result.image.topChainID == expected.last)
        #expect(result.image.chainIDs == expected)
        #expect(result.image.manifestDigest.description == BusyboxFixture.manifestDigest)
        #expect(result.image.configDigest.description == BusyboxFixture.configDigest)

        // Records: chainIDs, diffIDs, blob digests, parents.
        let records = try store.layers()
        #expect(Set(records.map(\.chainID)) == Set(expected))
        let bottom = try #require(try store.layer(expected[0]))
        let top = try #require(try store.layer(expected[1]))
        #expect(bottom.parent == nil && top.parent == expected[0])
        #expect(bottom.diffID.description == BusyboxFixture.diffIDs[0])
        #expect(top.diffID.description == BusyboxFixture.diffIDs[1])
        #expect(bottom.blobDigest?.description == BusyboxFixture.layerDigests[0])
        #expect(top.blobDigest?.description == BusyboxFixture.layerDigests[1])
        #expect(top.mediaType == "application/vnd.oci.image.layer.v1.tar+zstd")
        // busybox alone is 1982256 bytes; its hardlink is counted once.
        #expect(bottom.size >= 1_982_256 && bottom.size < 3_000_000)
        #expect(top.size > 0 && top.size < 200_000)

        // The layer dirs, in overlay format.
        let p = store.paths
        let layer1 = p.diffDir(expected[0]), layer2 = p.diffDir(expected[1])
        #expect(try statOf(layer1 + "/bin/busybox").st_ino == (try statOf(layer1 + "/usr/bin/busybox-hardlink")).st_ino)
        #expect(contents(layer1 + "/etc/motd") == "Welcome to the LayerKit busybox fixture.\n")
        let motd = try statOf(layer2 + "/etc/motd")
        #expect(motd.st_mode & 0o170000 == 0o020000 && motd.st_rdev == 0, "etc/motd must be a 0/0 char device whiteout")
        #expect(TreeSnapshot.xattrs(layer2 + "/etc/removed-later", ignoring: [])["trusted.overlay.opaque"] == Array("y".utf8))
        #expect(StoreCheck.entries(layer2 + "/etc/removed-later") == ["kept"])
        #expect(StoreCheck.entries(layer2) == ["etc"], "layer 2 holds only what it changes")
        #expect(lstatOrNil(layer2 + "/etc/.wh.motd") == nil)
        #expect(contents(layer2 + "/etc/hostname") == "layer2-host\n")

        // Short links: 26 characters, resolving to the diff dirs.
        for (id, diff) in [(expected[0], layer1), (expected[1], layer2)] {
            let record = try #require(try store.layer(id))
            #expect(record.link.count == 26 && record.link.allSatisfy { $0.isUppercase || (Character("2")...Character("7")).contains($0) })
            #expect(contents(p.linkFile(id)) == record.link)
            #expect(resolvedPath(p.shortLink(record.link)) == resolvedPath(diff))
            #expect(resolvedPath(diff) != nil)
        }
        #expect(try StoreCheck.problems(store) == [])
        #expect(try store.verify() == [])

        // Re-import: nothing unpacked, dirs untouched.
        let before = try [layer1, layer2].map { try statOf($0) }
        let again = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        #expect(again.unpackedCount == 0)
        #expect(again.layers.map(\.unpacked) == [false, false])
        #expect(again.layers.map(\.chainID) == expected)
        let after = try [layer1, layer2].map { try statOf($0) }
        for (b, a) in zip(before, after) {
            #expect(b.st_ino == a.st_ino)
            #expect(b.st_mtim.tv_sec == a.st_mtim.tv_sec && b.st_mtim.tv_nsec == a.st_mtim.tv_nsec)
            #expect(b.st_ctim.tv_sec == a.st_ctim.tv_sec && b.st_ctim.tv_nsec == a.st_ctim.tv_nsec)
        }
        #expect(try store.layers().count == 2)
        #expect(StoreCheck.entries(p.layersDir).count == 2)

        // A second store object (another connection) sees the same.
        let reopened = try LayerStore(root: tmp.sub("store"))
        #expect(try reopened.images().map(\.name) == ["latest"])
        #expect(reopened.openingCleanup.ran && reopened.openingCleanup.isEmpty)
    }

    @Test func twoImagesShareTheirBaseLayerDir() throws {
        let tmp = TempDir()
        let scratch = tmp.mkdir("scratch")
        let other = tmp.sub("other")
        let base = try StoreImages.busyboxLayer(0)
        let app = try StoreImages.gzipLayer([.dir("app"), .file("app/hello", "hello from app\n"), .dir("etc"), .whiteout("etc", "passwd")],
                                       scratch: scratch)
        let manifestDigest = try TestLayout.write(other, layers: [base, app], tag: "v1")

        let store = try LayerStore(root: tmp.sub("store"))
        let first = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: nil, name: "busybox")
        let baseID = first.layers[0].chainID
        let baseDir = store.paths.diffDir(baseID)
        let baseInode = try statOf(baseDir).st_ino
        let baseFile = try statOf(baseDir + "/bin/busybox")

        let second = try store.importImage(layout: OCIImageLayout(path: other), reference: "v1")
        #expect(second.image.name == "v1")
        #expect(second.image.manifestDigest.description == manifestDigest)
        #expect(second.layers.map(\.unpacked) == [false, true])
        #expect(second.unpackedCount == 1)
        #expect(second.layers[0].chainID == baseID)
        #expect(second.layers.map(\.chainID.description) == DigestOracle.chainIDs([base.diffID, app.diffID]))
        #expect(try statOf(baseDir).st_ino == baseInode)
        #expect(try statOf(baseDir + "/bin/busybox").st_ino == baseFile.st_ino)

        let records = try store.layers()
        #expect(records.count == 3)
        #expect(StoreCheck.entries(store.paths.layersDir).count == 3)
        #expect(StoreCheck.entries(store.paths.linksDir).count == 3)
        let appID = second.layers[1].chainID
        #expect(try store.layer(appID)?.parent == baseID)
        #expect(contents(store.paths.diffDir(appID) + "/app/hello") == "hello from app\n")
        let passwd = try statOf(store.paths.diffDir(appID) + "/etc/passwd")
        #expect(passwd.st_mode & 0o170000 == 0o020000 && passwd.st_rdev == 0)

        let images = try store.images()
        #expect(images.map(\.name) == ["busybox", "v1"])
        #expect(images[0].chainIDs.first == images[1].chainIDs.first)
        #expect(images[1].size == records.filter { $0.chainID != first.layers[1].chainID }.reduce(0) { $0 + $1.size })
        #expect(try StoreCheck.problems(store) == [])
        #expect(try store.verify() == [])
    }

    @Test func aRecordWhoseDirWasRemovedIsUnpackedAgain() throws {
        let tmp = TempDir()
        let store = try LayerStore(root: tmp.sub("store"))
        let first = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        let top = first.layers[1].chainID
        let link = try #require(try store.layer(top)).link
        try FileManager.default.removeItem(atPath: store.paths.layerDir(top))
        #expect(try store.verify().map(\.problem).contains("recorded layer has no diff dir"))

        let again = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        #expect(again.layers.map(\.unpacked) == [false, true])
        #expect(try store.layer(top)?.link == link, "the short name is kept: later lower-dir lists may use it")
        #expect(lstatOrNil(store.paths.diffDir(top) + "/etc/motd")?.st_rdev == 0)
        #expect(try store.verify() == [])
    }

    // MARK: Errors

    @Test func aCorruptLayerFailsWithOneLineAndLeavesNothingHalfWritten() throws {
        let tmp = TempDir()
        let layout = tmp.sub("busybox")
        try FileManager.default.copyItem(atPath: BusyboxFixture.layout, toPath: layout)
        let layer2 = TestLayout.blobPath(layout, BusyboxFixture.layerDigests[1])
        var data = try #require(FileManager.default.contents(atPath: layer2))
        data[data.count / 2] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: layer2))

        let root = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", layout + ":latest", "--root", root])
        #expect(r.status == 1)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "one line: \(r.stderr)")
        #expect(r.stderr.hasPrefix("layertool: ") && r.stderr.contains(BusyboxFixture.layerDigests[1].prefix(15)) && r.stderr.contains("mismatch"), "\(r.stderr)")
        #expect(r.stdout.isEmpty)

        let store = try LayerStore(root: root)
        #expect(try store.images().isEmpty, "no image record for a failed import")
        let chain = try DigestOracle.chainIDs(TestLayout.diffIDs(of: BusyboxFixture.layout)).map(parseDigest)
        #expect(try store.layers().map(\.chainID) == [chain[0]], "the complete bottom layer stays recorded")
        #expect(lstatOrNil(store.paths.layerDir(chain[1])) == nil)
        #expect(StoreCheck.entries(store.paths.stagingDir).isEmpty)
        #expect(store.openingCleanup.isEmpty, "the failed import cleaned up after itself")
        #expect(try StoreCheck.problems(store) == [])
    }

    @Test func usageErrorsAreOneLine() throws {
        let tmp = TempDir()
        let root = tmp.sub("store")
        let missing = try Layertool.run(["unpack", "--image", tmp.sub("nope") + ":latest", "--root", root])
        #expect(missing.status == 1)
        #expect(missing.stderr.split(separator: "\n").count == 1 && missing.stderr.contains("not an OCI image layout"), "\(missing.stderr)")

        let badName = try Layertool.run(["unpack", "--image", BusyboxFixture.layout, "--root", root, "--name", "a\nb"])
        #expect(badName.status == 1)
        #expect(badName.stderr.contains("control characters"), "\(badName.stderr)")

        let rootWithDest = try Layertool.run(["unpack", "--image", BusyboxFixture.layout, "--root", root, tmp.sub("dest")])
        #expect(rootWithDest.status != 0 && rootWithDest.stderr.contains("--root and --name go with a store import"), "\(rootWithDest.stderr)")

        try Data("x".utf8).write(to: URL(fileURLWithPath: tmp.sub("file")))
        let fileRoot = try Layertool.run(["unpack", "--image", BusyboxFixture.layout, "--root", tmp.sub("file")])
        #expect(fileRoot.status == 1 && fileRoot.stderr.contains("not a directory"), "\(fileRoot.stderr)")
    }

    // MARK: Crash safety

    /// Kills the CLI import with SIGKILL at random moments (fixed early ones and fractions of a
    /// measured clean import), twice per fresh store; after each kill the store, opened through
    /// the library, must be consistent, and a final import must complete it to exactly what a
    /// clean import gives.
    @Test func killedImportsLeaveAConsistentStore() throws {
        let tmp = TempDir()
        let layout = tmp.sub("big")
        try StoreImages.big(layout, scratch: tmp.mkdir("scratch"))

        let referenceRoot = tmp.sub("reference")
        let start = Date()
        let clean = try Layertool.run(["unpack", "--image", layout + ":big", "--root", referenceRoot, "--json"])
        let duration = Date().timeIntervalSince(start)
        try #require(clean.status == 0, "clean import failed: \(clean.stderr)")
        let reference = try LayerStore(root: referenceRoot)
        let expectedSnapshots = try StoreCheck.snapshots(reference)
        try #require(expectedSnapshots.count == 3)

        var rng = SystemRandomNumberGenerator()
        let fixed: [Double] = [0.005, 0.020, 0.050, 0.100, 0.200]
        let fractions: [Double] = [0.25, 0.5, 0.75, 0.9].map { $0 * duration }
        var killedMidway = 0
        var cleanedSomething = 0
        for (round, first) in (fixed + fractions).enumerated() {
            let root = tmp.sub("store-\(round)")
            let second = Double.random(in: 0.005...max(0.01, duration), using: &rng)
            for delay in [first, second] {
                let child = try Layertool.Child(["unpack", "--image", layout + ":big", "--root", root], scratch: tmp.path)
                usleep(UInt32(delay * 1_000_000))
                child.kill()
                let r = child.wait()
                if r.signaled { killedMidway += 1 } else {
                    #expect(r.status == 0, "round \(round), kill after \(delay)s: the import failed on its own: \(r.stderr)")
                }
                guard LayerStore.exists(at: root) else { continue }
                let store = try LayerStore(root: root)
                if !store.openingCleanup.isEmpty { cleanedSomething += 1 }
                #expect(try StoreCheck.problems(store) == [], "round \(round), kill after \(delay)s")
                #expect(try store.verify() == [], "round \(round), kill after \(delay)s")
                for layer in try store.layers() {
                    #expect(StoreCheck.snapshot(store.paths.diffDir(layer.chainID)) == expectedSnapshots[layer.chainID],
                            "round \(round): a recorded layer must be complete")
                }
            }
            let final = try Layertool.run(["unpack", "--image", layout + ":big", "--root", root, "--json"])
            #expect(final.status == 0, "round \(round): re-import failed: \(final.stderr)")
            let store = try LayerStore(root: root)
            #expect(try StoreCheck.problems(store) == [])
            #expect(try store.images().map(\.name) == ["big"])
            let snapshots = try StoreCheck.snapshots(store)
            #expect(Set(snapshots.keys) == Set(expectedSnapshots.keys))
            for (id, snapshot) in snapshots {
                #expect(snapshot == expectedSnapshots[id], "round \(round): layer \(id) differs: \(snapshot.differences(from: expectedSnapshots[id]!).prefix(5))")
            }
        }
        #expect(killedMidway >= 6, "most kills must land while the import runs (clean import took \(duration)s)")
        #expect(cleanedSomething >= 1, "at least one kill must have left something for the next open to clean")
    }

    /// The same, deterministically: the import kills itself at each named crash point (first
    /// and second layer); the state left is checked before and after the store is opened.
    @Test(arguments: ["import.unpacked", "import.synced", "import.renamed", "import.linked", "import.recorded"])
    func crashAtEachImportPointIsRecovered(_ point: String) throws {
        let tmp = TempDir()
        let layout = tmp.sub("busybox")
        try FileManager.default.copyItem(atPath: BusyboxFixture.layout, toPath: layout)
        let chain = try DigestOracle.chainIDs(TestLayout.diffIDs(of: layout)).map(parseDigest)
        for pass in 1...2 {
            let root = tmp.sub("store-\(pass)")
            let r = try Layertool.run(["unpack", "--image", layout + ":latest", "--root", root],
                                      environment: [Layertool.crashSwitch: "\(point):\(pass)"])
            #expect(r.signaled && r.status == SIGKILL, "\(point):\(pass) must kill the import (status \(r.status), \(r.stderr))")
            // The store works with its canonical root (the temp dir's path may hold `//`).
            let paths = StorePaths(root: MountTable.resolve(root))
            let crashed = chain[pass - 1]
            // Before anyone opens the store: what the crash left.
            let dirLeft = lstatOrNil(paths.layerDir(crashed)) != nil
            let stagingLeft = !StoreCheck.entries(paths.stagingDir).isEmpty
            switch point {
            case "import.unpacked", "import.synced": #expect(stagingLeft && !dirLeft)
            case "import.renamed", "import.linked", "import.recorded": #expect(dirLeft && !stagingLeft)
            default: Issue.record("unknown point")
            }
            let store = try LayerStore(root: root)
            let expectedRecords = point == "import.recorded" ? Array(chain[..<pass]) : Array(chain[..<(pass - 1)])
            #expect(try store.layers().map(\.chainID).sorted() == expectedRecords.sorted(), "\(point):\(pass)")
            #expect(try store.images().isEmpty)
            if point == "import.renamed" || point == "import.linked" {
                #expect(store.openingCleanup.unrecordedLayers == [paths.layerDir(crashed)])
            }
            if point == "import.linked" { #expect(store.openingCleanup.danglingLinks.count == 1) }
            if point == "import.unpacked" || point == "import.synced" { #expect(store.openingCleanup.stagingDirs.count == 1) }
            #expect(try StoreCheck.problems(store) == [])
            #expect(try store.verify() == [])

            let again = try store.importImage(layout: OCIImageLayout(path: layout), reference: "latest")
            #expect(again.layers.map(\.unpacked) == chain.map { !expectedRecords.contains($0) })
            #expect(try StoreCheck.problems(store) == [])
            #expect(lstatOrNil(paths.diffDir(chain[1]) + "/etc/motd")?.st_rdev == 0)
            #expect(TreeSnapshot(paths.diffDir(chain[0]) + "/bin").nodes.count == 270)
        }
    }

    @Test(arguments: ["gc.deleted", "gc.removed-one"])
    func crashDuringGcLeavesOnlyDirsWithoutRecords(_ point: String) throws {
        let tmp = TempDir()
        let root = tmp.sub("store")
        let store = try LayerStore(root: root)
        let chain = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest").layers.map(\.chainID)
        try store.removeImages(["latest"])
        let r = try Layertool.run(["gc", "--root", root], environment: [Layertool.crashSwitch: point])
        #expect(r.signaled && r.status == SIGKILL, "\(r.stderr)")
        // The records went first, in one transaction: none is left, whatever the dirs.
        let db = try Database(path: store.paths.database)
        #expect(try db.query("SELECT count(*) FROM layers", []) { (row) throws(DatabaseError) in try row.int(0) } == [0])
        let dirsLeft = StoreCheck.entries(store.paths.layersDir)
        #expect(dirsLeft.count == (point == "gc.deleted" ? 2 : 1), "\(dirsLeft)")
        // The top layer's dir goes first.
        if point == "gc.removed-one" { #expect(dirsLeft == [chain[0].hex]) }

        let reopened = try LayerStore(root: root)
        #expect(reopened.openingCleanup.unrecordedLayers.count == dirsLeft.count)
        #expect(StoreCheck.entries(store.paths.layersDir).isEmpty)
        #expect(StoreCheck.entries(store.paths.linksDir).isEmpty)
        #expect(try StoreCheck.problems(reopened) == [])
        #expect(try reopened.verify() == [])
        #expect(try reopened.collectGarbage().removed.isEmpty)
    }

    @Test func openingCleansLeftoversOnlyWhenNoOneElseUsesTheStore() throws {
        let tmp = TempDir()
        let root = tmp.sub("store")
        var store: LayerStore? = try LayerStore(root: root)
        let result = try store!.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        let paths = store!.paths
        let topLink = paths.shortLink(try #require(try store!.layer(result.layers[1].chainID)).link)
        store = nil

        let fake = String(repeating: "ab", count: 32)
        try FileManager.default.createDirectory(atPath: paths.stagingDir + "/Xy12Zq/diff/etc", withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: URL(fileURLWithPath: paths.stagingDir + "/Xy12Zq/diff/etc/file"))
        try FileManager.default.createDirectory(atPath: paths.layersDir + "/\(fake)/diff", withIntermediateDirectories: true)
        #expect(symlink("../layers/\(fake)/diff", paths.linksDir + "/AAAAAAAAAAAAAAAAAAAAAAAAAA") == 0)
        #expect(unlink(topLink) == 0)

        // Another process holds the store lock (as an import does): nothing is touched.
        let holder = try FileLock(path: paths.storeLock)
        try holder.lock(.shared)
        let busy = try LayerStore(root: root)
        #expect(!busy.openingCleanup.ran)
        #expect(StoreCheck.entries(paths.stagingDir) == ["Xy12Zq"])
        #expect(lstatOrNil(paths.layersDir + "/" + fake) != nil)
        holder.unlock()

        let idle = try LayerStore(root: root)
        #expect(idle.openingCleanup.ran)
        #expect(idle.openingCleanup.stagingDirs == [paths.stagingDir + "/Xy12Zq"])
        #expect(idle.openingCleanup.unrecordedLayers == [paths.layersDir + "/" + fake])
        #expect(idle.openingCleanup.danglingLinks == [paths.linksDir + "/AAAAAAAAAAAAAAAAAAAAAAAAAA"])
        #expect(idle.openingCleanup.restoredLinks == [topLink])
        #expect(StoreCheck.entries(paths.stagingDir).isEmpty)
        #expect(lstatOrNil(paths.layersDir + "/" + fake) == nil)
        #expect(try StoreCheck.problems(idle) == [])
        #expect(try idle.verify() == [])
        #expect(try idle.layers().count == 2)
    }

    // MARK: Concurrency

    /// Two processes import the same image at once, three times over: both succeed, each layer is
    /// unpacked by exactly one of them, and the store ends consistent.
    @Test func twoProcessesImportingTheSameImageUnpackEachLayerOnce() throws {
        let tmp = TempDir()
        let layout = tmp.sub("big")
        try StoreImages.big(layout, scratch: tmp.mkdir("scratch"))
        let chain = try DigestOracle.chainIDs(TestLayout.diffIDs(of: layout))
        for round in 0..<3 {
            let root = tmp.sub("store-\(round)")
            let a = try Layertool.Child(["unpack", "--image", layout + ":big", "--root", root, "--name", "one", "--json"], scratch: tmp.path)
            let b = try Layertool.Child(["unpack", "--image", layout + ":big", "--root", root, "--name", "two", "--json"], scratch: tmp.path)
            let ra = a.wait(), rb = b.wait()
            try #require(ra.status == 0 && !ra.signaled, "round \(round), first: \(ra.stderr)")
            try #require(rb.status == 0 && !rb.signaled, "round \(round), second: \(rb.stderr)")
            var unpackedBy = [String: Int]()
            for result in [ra, rb] {
                let imported = try result.json(LayertoolOutput.Import.self)
                #expect(imported.layers.map(\.chainID) == chain)
                #expect(imported.chainID == chain.last)
                for layer in imported.layers where layer.unpacked {
                    unpackedBy[layer.chainID, default: 0] += 1
                }
            }
            #expect(unpackedBy == Dictionary(uniqueKeysWithValues: chain.map { ($0, 1) }), "round \(round): \(unpackedBy)")
            let store = try LayerStore(root: root)
            #expect(store.openingCleanup.isEmpty)
            #expect(try store.layers().map(\.chainID.description).sorted() == chain.sorted())
            #expect(StoreCheck.entries(store.paths.layersDir).count == 3)
            #expect(StoreCheck.entries(store.paths.linksDir).count == 3)
            #expect(try store.images().map(\.name) == ["one", "two"])
            #expect(try StoreCheck.problems(store) == [])
            #expect(try store.verify() == [])
        }
    }

    /// gc started while an import runs waits for it: the import's layers are unreferenced until
    /// its image record is written, and must not be collected under it.
    @Test func gcWaitsForAnImportInProgress() throws {
        let tmp = TempDir()
        let layout = tmp.sub("big")
        try StoreImages.big(layout, scratch: tmp.mkdir("scratch"))
        let chain = try DigestOracle.chainIDs(TestLayout.diffIDs(of: layout))
        let root = tmp.sub("store")
        let store = try LayerStore(root: root)
        let child = try Layertool.Child(["unpack", "--image", layout + ":big", "--root", root], scratch: tmp.path)
        // Wait until the bottom layer is in place (renamed in; recorded or about to be).
        let deadline = Date().addingTimeInterval(30)
        while StoreCheck.entries(store.paths.layersDir).isEmpty && child.process.isRunning && Date() < deadline { usleep(500) }
        let midway = child.process.isRunning
        let gc = try store.collectGarbage()
        let r = child.wait()
        try #require(midway, "the import finished before gc could start; the test proves nothing")
        #expect(r.status == 0 && !r.signaled, "\(r.stderr)")
        #expect(gc.removed.isEmpty, "gc removed \(gc.removed.map(\.chainID)) under a running import")
        #expect(try store.layers().map(\.chainID.description).sorted() == chain.sorted())
        #expect(try store.images().map(\.name) == ["big"])
        #expect(try StoreCheck.problems(store) == [])
    }

    // MARK: ls, rm, gc

    @Test func lsRmGcThroughTheCLI() throws {
        let tmp = TempDir()
        let root = tmp.sub("store")
        let other = tmp.sub("other")
        let app = try StoreImages.gzipLayer([.dir("app"), .file("app/run", "#!/bin/sh\n", mode: 0o755)], scratch: tmp.mkdir("scratch"))
        try TestLayout.write(other, layers: [try StoreImages.busyboxLayer(0), app], tag: "v2")
        let busyboxChain = try DigestOracle.chainIDs(TestLayout.diffIDs(of: BusyboxFixture.layout))
        let otherChain = try DigestOracle.chainIDs(TestLayout.diffIDs(of: other))
        try #require(busyboxChain[0] == otherChain[0])

        func tool(_ args: [String]) throws -> ProcessResult { try Layertool.run(args + ["--root", root]) }
        func list<Row: Decodable>(_ args: [String], of row: Row.Type) throws -> [Row] {
            let r = try tool(args + ["--json"])
            try #require(r.status == 0, "\(args): \(r.stderr)")
            return try r.json([Row].self)
        }

        // Nothing yet: a --root that names no store is an error (a typo must not look like an
        // empty store), and looking creates none.
        let none = try tool(["ls"])
        #expect(none.status == 1 && none.stderr == "layertool: \(root): no layer store here\n", "\(none.stderr)")
        #expect(!LayerStore.exists(at: root))

        let imported = try tool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "bb"])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("image    bb"))
        #expect(imported.stdout.contains("chainID  \(busyboxChain[1])"))
        #expect(imported.stdout.contains("layer 1  \(busyboxChain[0])  unpacked"))
        #expect(imported.stdout.contains("layer 2  \(busyboxChain[1])  unpacked"))
        let second = try tool(["unpack", "--image", other + ":v2"])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("image    v2"))
        #expect(second.stdout.contains("layer 1  \(otherChain[0])  already present"))

        let images = try list(["ls", "images"], of: LayertoolOutput.Image.self)
        #expect(images.map(\.name) == ["bb", "v2"])
        #expect(images.compactMap(\.chainID) == [busyboxChain[1], otherChain[1]])
        #expect(images.map(\.layers) == [busyboxChain, otherChain])
        let layers = try list(["ls", "layers"], of: LayertoolOutput.StoreLayer.self)
        #expect(Set(layers.map(\.chainID)) == Set(busyboxChain + otherChain))
        let sizes = Dictionary(uniqueKeysWithValues: layers.map { ($0.chainID, $0.size) })
        #expect(sizes.values.allSatisfy { $0 > 0 })
        #expect(images[0].size == busyboxChain.reduce(0) { $0 + sizes[$1]! })
        let base = try #require(layers.first { $0.chainID == busyboxChain[0] })
        #expect(base.images == ["bb", "v2"])
        #expect(base.parent == nil)
        #expect(try list(["ls", "containers"], of: LayertoolOutput.Container.self).isEmpty)

        let human = try tool(["ls"])
        #expect(human.status == 0)
        let humanLines = human.stdout.split(separator: "\n")
        #expect(humanLines.count == 3 && humanLines[0].hasPrefix("NAME"))
        #expect(humanLines[1].hasPrefix("bb ") && humanLines[1].contains(String(busyboxChain[1].dropFirst(7).prefix(12))))
        let humanLayers = try tool(["ls", "layers"])
        #expect(humanLayers.stdout.split(separator: "\n").count == 4)

        // rm of an unknown name: nothing removed, one line, exit 1.
        let bad = try tool(["rm", "bb", "missing"])
        #expect(bad.status == 1)
        #expect(bad.stderr == "layertool: no image named \"missing\"\n")
        #expect(try list(["ls"], of: LayertoolOutput.Image.self).count == 2)

        // rm removes the record only; gc then removes only busybox's top layer.
        let paths = StorePaths(root: root)
        let baseInode = try statOf(paths.diffDir(try parseDigest(busyboxChain[0]))).st_ino
        let rm = try tool(["rm", "bb"])
        #expect(rm.status == 0 && rm.stdout == "removed image bb\n")
        #expect(try list(["ls"], of: LayertoolOutput.Image.self).map(\.name) == ["v2"])
        #expect(try list(["ls", "layers"], of: LayertoolOutput.StoreLayer.self).count == 3, "rm does not remove layers")
        #expect(StoreCheck.entries(paths.layersDir).count == 3)
        let unused = try #require(try list(["ls", "layers"], of: LayertoolOutput.StoreLayer.self).first { $0.chainID == busyboxChain[1] })
        #expect(unused.images == [])

        let gcResult = try tool(["gc", "--json"])
        #expect(gcResult.status == 0, "\(gcResult.stderr)")
        let gc = try gcResult.json(LayertoolOutput.GarbageCollection.self)
        #expect(gc.removed.map(\.chainID) == [busyboxChain[1]])
        #expect(gc.freedBytes == sizes[busyboxChain[1]])
        #expect(StoreCheck.entries(paths.layersDir).sorted() == [busyboxChain[0], otherChain[1]].map { String($0.dropFirst(7)) }.sorted())
        #expect(try statOf(paths.diffDir(try parseDigest(busyboxChain[0]))).st_ino == baseInode)
        #expect(StoreCheck.entries(paths.linksDir).count == 2)

        // The last image: gc removes both its layers, the child first.
        #expect(try tool(["rm", "v2"]).status == 0)
        let last = try tool(["gc"])
        #expect(last.status == 0)
        let lastLines = last.stdout.split(separator: "\n").map(String.init)
        // Two layers, the layers' total, and the blobs (manifest, config, layers) no image needs now.
        #expect(lastLines.count == 4, "\(last.stdout)")
        #expect(lastLines.first?.hasPrefix("removed \(otherChain[1])") == true)
        #expect(lastLines.dropFirst().first?.hasPrefix("removed \(otherChain[0])") == true)
        let freed = sizes[otherChain[0]]! + sizes[otherChain[1]]!
        #expect(lastLines.dropLast().last?.contains("(\(freed) bytes) in 2 layers") == true, "\(last.stdout)")
        #expect(lastLines.last?.hasSuffix("blobs no image needs") == true, "\(last.stdout)")
        #expect(StoreCheck.entries(paths.blobsDir).isEmpty, "blobs left after the last image went")
        #expect(StoreCheck.entries(paths.layersDir).isEmpty)
        #expect(StoreCheck.entries(paths.linksDir).isEmpty)
        #expect(StoreCheck.entries(paths.locksDir) == ["store.lock"])
        #expect(try list(["ls", "layers"], of: LayertoolOutput.StoreLayer.self).isEmpty)
        #expect(try tool(["gc"]).stdout == "nothing to remove\n")
    }

    @Test func gcKeepsLayersOfContainersAndRemovesChildrenBeforeParents() throws {
        let tmp = TempDir()
        let store = try LayerStore(root: tmp.sub("store"))
        let result = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        let chain = result.layers.map(\.chainID)
        // A container on the bottom layer keeps it (and only it) after the image goes.
        try store.withConnection { (db) throws(DatabaseError) in try db.execute("INSERT INTO containers (id, image, chain_id, driver, state, created) VALUES ('c1', 'latest', ?, 'overlay', 'created', 0)",
                             chain[0]) }
        #expect { try store.removeImages(["latest", "nope"]) } throws: { ($0 as? StoreError)?.kind == .notFound }
        #expect(try store.images().map(\.name) == ["latest"], "all or nothing")
        try store.removeImages(["latest", "latest"])
        #expect(try store.images().isEmpty)
        #expect(try store.collectGarbage().removed.map(\.chainID) == [chain[1]])
        #expect(try store.layers().map(\.chainID) == [chain[0]])
        #expect(try store.containers().map(\.id) == ["c1"])
        // The database refuses to drop a parent before its child, whatever the code does.
        try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        #expect(throws: DatabaseError.self) { try store.withConnection { (db) throws(DatabaseError) in try db.execute("DELETE FROM layers WHERE chain_id = ?", chain[0]) } }
        try store.withConnection { (db) throws(DatabaseError) in try db.execute("DELETE FROM containers") }
        try store.removeImages(["latest"])
        let gc = try store.collectGarbage()
        #expect(gc.removed.map(\.chainID) == [chain[1], chain[0]])
        #expect(gc.freedBytes == result.layers.reduce(0) { $0 + $1.size })
        #expect(try StoreCheck.problems(store) == [])
    }
}
