import Foundation
@testable import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Regression tests of issue 10's findings: each one failed (crashed, read a host file, lost data,
/// or answered differently) before the fix it names.
@Suite(.serialized, .requires(.root(because: "the store, mounts and ownership")))
struct HardeningTests {
    /// A layer with `depth` nested dirs (`d/d/d/...`) and a file at the bottom.
    static func deepLayer(depth: Int, to path: String) -> String {
        var entries = [TarEntry]()
        var dir = ""
        for _ in 0..<depth {
            dir += dir.isEmpty ? "d" : "/d"
            entries.append(.dir(dir))
        }
        entries.append(.file(dir + "/bottom", "deep\n"))
        return TarBuilder.write(entries, to: path)
    }

    /// An OCI layout of the given layer files (uncompressed), tagged `latest`.
    static func layout(_ layers: [String], at dir: String, sizes: [Int64]? = nil) throws {
        let image = try StoreUnpackAgreementTests.image(layers)
        try FileManager.default.createDirectory(atPath: dir + "/blobs/sha256", withIntermediateDirectories: true)
        for (i, layer) in image.layers.enumerated() {
            try FileManager.default.copyItem(atPath: layers[i], toPath: dir + "/blobs/sha256/" + layer.descriptor.digest.hex)
        }
        var manifest = image.manifest
        if let sizes { for i in manifest.layers.indices { manifest.layers[i].size = sizes[i] } }
        let manifestBytes = CanonicalJSON.encode(manifest)
        let manifestDigest = Digest.sha256(of: manifestBytes)
        createFile(dir + "/blobs/sha256/" + manifestDigest.hex, bytes: Data(manifestBytes))
        createFile(dir + "/blobs/sha256/" + image.manifest.config.digest.hex, bytes: Data(image.configBytes))
        let index = ImageIndex(manifests: [Descriptor(mediaType: MediaType.ociManifest, digest: manifestDigest, size: Int64(manifestBytes.count),
                                                      annotations: [Annotation.referenceName: "latest"])])
        createFile(dir + "/index.json", bytes: Data(CanonicalJSON.encode(index)))
        createFile(dir + "/oci-layout", #"{"imageLayoutVersion":"1.0.0"}"#)
    }

    // MARK: 1. Deep trees

    @Test func aDeepImageIsRefusedCleanlyAndTheStoreStillOpens() throws {
        let tmp = TempDir("deep-image")
        let layer = Self.deepLayer(depth: 3_000, to: tmp.sub("deep.tar"))
        try Self.layout([layer], at: tmp.sub("oci"))
        let store = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", tmp.sub("oci"), "--name", "deep", "--root", store])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("path longer than 4095 bytes"), "\(r.stderr)")
        let listed = try Layertool.run(["ls", "--root", store])
        #expect(listed.status == 0, "the store opens after the refused import: \(listed.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/staging").isEmpty)
        // Plain unpack: the same clear refusal, and the destination is not made.
        let plain = try Layertool.run(["unpack", layer, tmp.sub("plain")])
        #expect(plain.status == 1 && plain.stderr.contains("path longer than 4095 bytes"), "\(plain.stderr)")
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("plain")))
    }

    @Test func aContainerThatMadeADeepTreeCanBeDiffedAndRemoved() throws {
        let tmp = TempDir("deep-container")
        let store = tmp.sub("store")
        try #require(try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "bb", "--root", store]).status == 0)
        let opened = try LayerStore(root: store)
        let container = try opened.createContainer(id: "deep", base: "bb")
        // What a process in the container would leave in its upper dir: 10,000 nested dirs.
        var fd = open(opened.upperDir(of: container.id), O_RDONLY | O_DIRECTORY)
        for _ in 0..<10_000 {
            try #require(mkdirat(fd, "d", 0o755) == 0)
            let next = openat(fd, "d", O_RDONLY | O_DIRECTORY)
            close(fd)
            fd = next
        }
        close(fd)
        let diff = try Layertool.run(["diff", "deep", "-o", tmp.sub("deep.tar"), "--root", store])
        #expect(diff.status == 0, "\(diff.stderr)")
        let listing = try run(try requireTool("tar"), ["-tf", tmp.sub("deep.tar")])
        #expect(listing.stdout.split(separator: "\n").count == 10_000, "every nested dir is in the layer")
        // Commit copies the upper dir (it never unpacks the blob, whose paths are too long for any
        // single call), and the image's layer holds the whole depth.
        let committed = try opened.commit(container: "deep", as: "deep:committed")
        #expect(committed.layerDir == .copiedFromUpperDir)
        var deepest = open(opened.paths.diffDir(committed.chainID), O_RDONLY | O_DIRECTORY)
        var levels = 0
        while true {
            let next = openat(deepest, "d", O_RDONLY | O_DIRECTORY)
            close(deepest)
            guard next >= 0 else { break }
            deepest = next
            levels += 1
        }
        #expect(levels == 10_000)
        let removed = try Layertool.run(["rm", "deep", "--root", store])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: store + "/containers/deep"))
    }

    // MARK: 2. Store dirs that are symlinks

    @Test(arguments: ["staging", "containers", "layers", "l", "blobs", "blobs/sha256"])
    func aStoreWhoseOwnDirIsASymlinkIsRefused(_ dir: String) throws {
        let tmp = TempDir("store-symlink")
        let store = tmp.sub("store")
        try #require(try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "bb", "--root", store]).status == 0)
        let victim = tmp.mkdir("victim")
        createFile(victim + "/precious", "keep me\n")
        let path = store + "/" + dir
        try FileManager.default.moveItem(atPath: path, toPath: path + ".moved")
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: victim)
        for args in [["ls"], ["gc"], ["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "again"]] {
            let r = try Layertool.run(args + ["--root", store])
            #expect(r.status == 1 && r.stderr.contains("is a symlink: refusing to use it"), "\(args): \(r.stderr)")
        }
        #expect(try String(contentsOfFile: victim + "/precious", encoding: .utf8) == "keep me\n", "nothing was done through the link")
        // Nothing made through the link either (a symlinked `blobs` got `sha256` made in it; found
        // by the store-open fuzz target).
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim) == ["precious"])
    }

    /// SQLite opens the database's companions by name: a fifo there made the open wait forever
    /// (found by the store-open fuzz target). `timeout` bounds the wait if that comes back.
    @Test(arguments: ["metadata.db", "metadata.db-wal", "metadata.db-shm", "metadata.db-journal"])
    func aStoreWhoseDatabaseFileIsAFifoIsRefused(_ name: String) throws {
        let tmp = TempDir("store-fifo")
        let store = tmp.sub("store")
        _ = try LayerStore(root: store)
        unlink(store + "/" + name)
        #expect(mkfifo(store + "/" + name, 0o600) == 0)
        let r = try run(which("timeout")!, ["60", Layertool.path, "ls", "--root", store])
        #expect(r.status == 1 && r.stderr.contains("is not a regular file"), "\(r.status): \(r.stderr)")
    }

    /// A layer's `link` file that someone replaced: a fifo (no writer: a read would wait forever),
    /// a symlink to /dev/zero (endless), bytes that are not UTF-8 (Foundation's reader leaked its
    /// buffer on them: found by the store-open fuzz target). The check reports each, in bounded
    /// time, and reads nothing through the symlink.
    @Test(arguments: ["fifo", "symlink", "not-utf8"])
    func aReplacedLinkFileIsReportedNotFollowed(_ kind: String) throws {
        let tmp = TempDir("store-link-file")
        let store = try LayerStore(root: tmp.sub("store"))
        let image = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        let chainID = image.layers[0].chainID
        let linkFile = store.paths.linkFile(chainID)
        unlink(linkFile)
        switch kind {
        case "fifo": #expect(mkfifo(linkFile, 0o600) == 0)
        case "symlink": #expect(symlink("/dev/zero", linkFile) == 0)
        default: createFile(linkFile, bytes: Data([0xff, 0xfe, 0x00, 0xc3]))
        }
        let problems = try store.verify()
        #expect(problems.map(\.path).contains(linkFile), "\(problems)")
        let r = try run(which("timeout")!, ["60", Layertool.path, "ls", "--root", store.root])
        #expect(r.status == 0, "\(r.status): \(r.stderr)")
    }

    /// A store setting someone rewrote with a newline in it: the refusal is one line (found by
    /// the store-open fuzz target).
    @Test func aStoreSettingWithANewlineIsRefusedInOneLine() throws {
        let tmp = TempDir("store-setting")
        let store = tmp.sub("store")
        _ = try LayerStore(root: store)
        do {
            let db = try Database(path: store + "/metadata.db")
            try db.execute("UPDATE store_settings SET value = ? WHERE key = 'overlay_xattr_namespace'", "trusted\n\u{1b}[2Jx")
        }
        let r = try Layertool.run(["ls", "--root", store])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("unknown overlay xattr namespace") && !r.stderr.contains("\u{1b}"), "\(r.stderr)")
    }

    /// Layer sizes someone rewrote in the database: two of 2^62 bytes made an image's size
    /// overflow, and Swift trapped (found by the store-open fuzz target). A size that is not a
    /// byte count is now refused in one line; `ls` neither crashes nor prints a wrapped number.
    @Test(arguments: [Int64(1) << 62, -5])
    func aLayerSizeThatIsNoByteCountIsRefused(_ size: Int64) throws {
        let tmp = TempDir("store-size")
        let store = tmp.sub("store")
        let opened = try LayerStore(root: store)
        _ = try opened.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest")
        do {
            let db = try Database(path: store + "/metadata.db")
            try db.execute("UPDATE layers SET size = ?", size)
        }
        for args in [["ls"], ["ls", "layers"]] {
            let r = try Layertool.run(args + ["--root", store])
            #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("not a size in bytes"),
                    "\(args): \(r.status) \(r.stderr)")
        }
    }

    @Test func aStoreWritableByOthersIsRefused() throws {
        let tmp = TempDir("store-perms")
        let store = tmp.sub("store")
        try #require(try Layertool.run(["ls", "--root", store]).status == 1)
        _ = try LayerStore(root: store)
        chmod(store + "/staging", 0o777)
        let r = try Layertool.run(["ls", "--root", store])
        #expect(r.status == 1 && r.stderr.contains("writable by another user"), "\(r.stderr)")
    }

    // MARK: 3. Hostile docker save archives

    /// A legacy `docker save` archive whose layer is a symlink to `target`.
    static func archiveWithSymlinkedLayer(_ target: String, in tmp: TempDir) throws -> String {
        let dir = tmp.mkdir("archive")
        let config = Data(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:\#(String(repeating: "0", count: 64))"]}}"#.utf8)
        createFile(dir + "/config.json", bytes: config)
        try FileManager.default.createDirectory(atPath: dir + "/layer", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/layer/layer.tar", withDestinationPath: target)
        let manifest = #"[{"Config":"config.json","RepoTags":["evil:latest"],"Layers":["layer/layer.tar"]}]"#
        createFile(dir + "/manifest.json", manifest)
        let archive = tmp.sub("evil.tar")
        let r = try run(try requireTool("tar"), ["-cf", archive, "-C", dir, "."])
        try #require(r.status == 0, "\(r.stderr)")
        return archive
    }

    @Test(arguments: ["/etc/passwd", "/dev/zero", "../../../../etc/passwd"])
    func aDockerSaveArchiveCannotReadHostFiles(_ target: String) throws {
        let tmp = TempDir("docker-save-host")
        let archive = try Self.archiveWithSymlinkedLayer(target, in: tmp)
        var hostDigest: String?
        if target.hasSuffix("passwd") {
            let digest = try #require(DigestOracle.hex(ofFile: "/etc/passwd"), "cannot read /etc/passwd")
            hostDigest = digest
        }
        let store = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", archive, "--root", store])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        if let hostDigest { #expect(!r.stderr.contains(hostDigest), "the error leaks the host file's digest: \(r.stderr)") }
        let plain = try Layertool.run(["unpack", "--image", archive, tmp.sub("dest")])
        #expect(plain.status == 1, "\(plain.stderr)")
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("dest")))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: tmp.path).filter { $0.contains(".layertool-") }
        #expect(leftovers.isEmpty, "staging dirs left beside DEST: \(leftovers)")
    }

    // MARK: 4–5. Blobs: the bytes kept are the bytes hashed; sizes are checked

    @Test func importedBlobsHashToTheirDigests() throws {
        let tmp = TempDir("blob-integrity")
        let store = try LayerStore(root: tmp.sub("store"))
        let result = try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest", name: "bb")
        for layer in result.layers {
            let blobPath = store.paths.blob(layer.blobDigest)
            let hashed = try #require(DigestOracle.hex(ofFile: blobPath), "cannot read \(blobPath)")
            #expect(hashed == layer.blobDigest.hex)
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: store.paths.blobsDir).filter { $0.hasPrefix(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test(arguments: [Int64(5) << 30, -1, 100])
    func aLayerWhoseDescriptorLiesAboutItsSizeIsRefused(_ declared: Int64) throws {
        let tmp = TempDir("descriptor-size")
        let layer = TarBuilder.write([.file("f", String(repeating: "x", count: 2000))], to: tmp.sub("l.tar"))
        try Self.layout([layer], at: tmp.sub("oci"), sizes: [declared])
        let store = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", tmp.sub("oci"), "--root", store])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("size"), "\(r.stderr)")
        let plain = try Layertool.run(["unpack", "--image", tmp.sub("oci"), tmp.sub("dest")])
        #expect(plain.status == 1, "\(plain.stderr)")
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("dest")))
    }

    // MARK: 6. A full disk under a non-empty destination

    @Test(.requires(.tools("mount", "unshare")))   // a small tmpfs in a private mount namespace
    func aFullDiskLeavesNoPartialFileInANonEmptyDestination() throws {
        let tmp = TempDir("full-disk")
        let layer = TarBuilder.write([.file("keep.txt", "new version\n"), .file("big", String(repeating: "b", count: 2 << 20))],
                                     to: tmp.sub("l.tar"))
        let dest = tmp.mkdir("dest")
        let script = """
            mount -t tmpfs -o size=1m tmpfs '\(dest)' || exit 99
            echo old > '\(dest)/keep.txt'
            '\(Layertool.path)' unpack '\(layer)' '\(dest)' 2>/dev/null && exit 98
            ls -A '\(dest)'
            cat '\(dest)/keep.txt'
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", "sh", "-c", script])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        // Only complete files under real names: no `big` cut short, no temporary file left.
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(!lines.contains("big"), "a partial file under its final name: \(lines)")
        #expect(!lines.contains { $0.hasPrefix(".layertool-partial-") }, "a temporary file was left: \(lines)")
        #expect(lines.last == "new version" || lines.last == "old", "\(lines)")
    }

    // MARK: 9. ACL records

    @Test(.requires(.tools("setfacl", "getfacl", "bsdtar")))
    func aclRecordsAreApplied() throws {
        let tmp = TempDir("acl")
        let src = tmp.mkdir("src")
        createFile(src + "/file", "f\n")
        try FileManager.default.createDirectory(atPath: src + "/dir", withIntermediateDirectories: true)
        let setfacl = try requireTool("setfacl")
        try #require(try run(setfacl, ["-m", "u:1234:rw,g:4321:r", src + "/file"]).status == 0)
        try #require(try run(setfacl, ["-d", "-m", "u:1234:rwx", src + "/dir"]).status == 0)
        let archive = tmp.sub("acl.tar")
        // bsdtar writes SCHILY.acl.access / SCHILY.acl.default records (not the binary xattrs).
        let packed = try run(try requireTool("bsdtar"), ["--acls", "--no-xattrs", "-cf", archive, "-C", src, "file", "dir"])
        try #require(packed.status == 0, "\(packed.stderr)")
        let listing = try #require(FileManager.default.contents(atPath: archive))
        try #require(listing.range(of: Data("SCHILY.acl.access".utf8)) != nil, "the archive carries no ACL record")
        let dest = tmp.sub("dest")
        let r = try Layertool.run(["unpack", archive, dest])
        #expect(r.status == 0, "\(r.stderr)")
        func acl(_ path: String) throws -> String { try run(try requireTool("getfacl"), ["--omit-header", "--numeric", path]).stdout }
        #expect(try acl(dest + "/file") == acl(src + "/file"))
        #expect(try acl(dest + "/dir") == acl(src + "/dir"))
    }

    // MARK: 11. The container's root in a commit

    @Test func aChmodOfTheContainersRootReachesTheCommittedImage() throws {
        let tmp = TempDir("root-chmod")
        let store = try LayerStore(root: tmp.sub("store"))
        try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest", name: "bb")
        let container = try store.createContainer(id: "c", base: "bb")
        let upper = store.upperDir(of: container.id)
        var before = stat()
        try #require(lstat(upper, &before) == 0)
        #expect(before.st_mode & 0o7777 == 0o755, "the upper root starts as the image's root")
        // What `chmod 0700 /; chown 33:33 /` in the container leaves in the upper dir.
        chmod(upper, 0o700)
        chown(upper, 33, 33)
        _ = try store.commit(container: container.id, as: "bb:root")
        let tree = tmp.sub("tree")
        _ = try store.exportImage("bb:root", to: tmp.sub("out"), reference: "root")
        _ = try Unpacker().unpackImage(at: tmp.sub("out"), reference: "root", to: tree)
        var root = stat()
        try #require(lstat(tree, &root) == 0)
        #expect(root.st_mode & 0o7777 == 0o700 && root.st_uid == 33 && root.st_gid == 33)
        // A container that did not touch its root commits no root entry.
        let untouched = try store.createContainer(id: "u", base: "bb")
        createFile(store.upperDir(of: untouched.id) + "/new")
        let second = try store.commit(container: untouched.id, as: "bb:new")
        #expect(second.layer.entryCount == 1, "only the new file: \(second.layer.entryCount) entries")
    }

    // MARK: 12–14. CLI rough edges

    @Test(.requires(.tools("unshare")))
    func mountRefusesASymlinkedTargetAndUmountRefusesWhatItDidNotMount() throws {
        let tmp = TempDir("cli-mount")
        let store = tmp.sub("store")
        try #require(try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "bb", "--root", store]).status == 0)
        let elsewhere = tmp.mkdir("elsewhere")
        try FileManager.default.createSymbolicLink(atPath: tmp.sub("link"), withDestinationPath: elsewhere)
        let script = """
            T='\(Layertool.path)'; S='\(store)'
            "$T" mount --root "$S" --name c1 bb '\(tmp.sub("link"))' 2>&1; echo "status $?"
            grep -c ' \(elsewhere) ' /proc/self/mountinfo
            "$T" umount --root "$S" / 2>&1; echo "status $?"
            "$T" mount --root "$S" --name c2 bb >/dev/null; echo "status $?"
            "$T" umount --root "$S" c2 >/dev/null; echo "status $?"
            "$T" mount --root "$S" c2 | grep -c mountpoint; echo "status $?"
            "$T" umount --root "$S" c2 >/dev/null
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", "sh", "-c", script])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 9, "\(r.stdout)")
        #expect(lines[0].contains("the mount point is a symlink") && lines[1] == "status 1", "\(lines)")
        #expect(lines[2] == "0", "nothing mounted where the link points")
        #expect(lines[3].contains("not a mount layertool made") && lines[4] == "status 1", "\(lines)")
        #expect(lines[5] == "status 0" && lines[6] == "status 0", "\(lines)")
        #expect(lines[7] == "1" && lines[8] == "status 0", "an existing, unmounted container mounts again: \(lines)")
    }

    @Test func staleStagingDirsOfAKilledUnpackAreRemovedByTheNextRun() throws {
        let tmp = TempDir("stale-staging")
        // What a killed unpack leaves: a staging dir nobody holds a lock on.
        let stale = tmp.mkdir(".dest.layertool-AbCdEf")
        createFile(stale + "/half", "x")
        let held = tmp.mkdir(".dest.layertool-HeLd12")
        let lockFD = open(held, O_RDONLY | O_DIRECTORY)
        defer { close(lockFD) }
        try #require(flock(lockFD, LOCK_EX) == 0)
        let r = try Layertool.run(["unpack", fixturesDir + "/layers/basic.tar", tmp.sub("dest")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale), "the leftover of a killed run is removed")
        #expect(FileManager.default.fileExists(atPath: held), "the staging dir of a run in progress stays")
    }

    @Test func roughEdgesGiveOneLine() throws {
        let tmp = TempDir("rough-edges")
        let store = tmp.sub("store")
        try #require(try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "bb", "--root", store]).status == 0)
        let cases: [([String], Int32, String)] = [
            (["ls", "--root", tmp.sub("nonexistent")], 1, "no layer store here"),
            (["gc", "--root", tmp.sub("nonexistent")], 1, "no layer store here"),
            (["export", "bb", tmp.sub("out") + ":../x", "--root", store], 1, "does not exist"),
            (["export", "bb", "/etc/passwd", "--root", store], 1, "exists and is not a directory"),
            (["export", "bb", tmp.sub("nonexistent/x/y"), "--root", store], 1, "does not exist"),
            (["diff", "--level", "99", tmp.path, tmp.path, "-o", tmp.sub("l.tar.gz")], 2, "gzip takes 1-9"),
            (["unpack", "--digest", "sha256:xyz", fixturesDir + "/layers/basic.tar", tmp.sub("d")], 1, "invalid digest"),
            (["unpack"], 2, "layertool --help"),
        ]
        for (args, status, message) in cases {
            let r = try Layertool.run(args)
            let lines = r.stderr.split(separator: "\n")
            #expect(r.status == status && lines.count == 1 && lines[0].hasPrefix("layertool: ") && r.stderr.contains(message),
                    "\(args): status \(r.status): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("nonexistent")), "nothing made on the way")
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("out:..")))
    }
}
