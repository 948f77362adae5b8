import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The same layers unpacked by other tools and by LayerKit must give the same tree:
//
// - umoci (an OCI image layout, several layers with whiteouts, an opaque dir, hardlinks, ...).
//   umoci 0.4.7 rejects tar+zstd layers ("blob is not correct mediatype"), so the layouts here
//   are written by the test itself with gzip layers.
// - GNU tar and bsdtar, for layers without whiteouts (they know nothing of them).
//
// Trees are compared with TreeSnapshot: type, mode, owner, size, content, symlink target, mtime,
// xattrs and hardlink groups. Against umoci, dir mtimes are not compared (TreeSnapshot's default);
// against tar and bsdtar they are, since all three set them from the archive. The mtime of the
// root itself is never compared: no archive here names it, so it is whenever extraction ended.
//
// All of these need root: devices, ownership, setuid and security.capability are only restored
// faithfully by root, and umoci needs --rootless otherwise (which changes the result by design).

private enum Interop {
    /// umoci and gzip (the layouts' layers), as root: umoci without root needs --rootless, which
    /// changes ownership by design.
    static let umoci: [Requirement] = [.root(because: "umoci without root needs --rootless, which changes ownership by design"),
                                       .tools("umoci", "gzip")]
    /// Extracting as root: ownership, devices, setuid and security.capability.
    static let extractAsRoot = Requirement.root(because: "ownership, devices, setuid, security.capability")

    /// cap_net_raw+ep as a VFS_CAP_REVISION_2 `security.capability` value (what `setcap` writes).
    static let capNetRaw: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
                                     0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]

    /// A 67-char dir and a 71-char file name: `long/D/F` and the link target `D/F` pass 100 bytes.
    static let D = "directory-with-a-long-name-" + String(repeating: "d", count: 40)
    static let F = "file-with-a-long-name-" + String(repeating: "f", count: 45) + ".txt"

    static func at(_ e: TarEntry, mtime: Int) -> TarEntry { var e = e; e.mtime = mtime; return e }
    static func with(_ e: TarEntry, xattrs: [(String, [UInt8])]) -> TarEntry { var e = e; e.xattrs = xattrs; return e }

    /// The bottom layer: every entry type and the metadata that is hard to get right. No
    /// whiteouts, so tar and bsdtar can extract it as well.
    static let base: [TarEntry] = [
        at(.dir("bin"), mtime: 1_600_000_000),
        .file("bin/tool", "#!/bin/sh\necho tool\n", mode: 0o755),
        .hardlink("bin/tool-hl", "bin/tool"),
        at(.symlink("bin/sh", "tool"), mtime: 1_500_000_000),
        .symlink("bin/abs", "/etc/passwd"),
        .symlink("bin/dangling", "../nowhere"),
        .file("bin/su", "setuid\n", mode: 0o4755),
        .file("bin/wall", "setgid\n", mode: 0o2755, gid: 5),
        with(.file("bin/ping", "ping with cap_net_raw\n", mode: 0o755), xattrs: [("security.capability", capNetRaw)]),
        .dir("etc"),
        .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        .file("etc/motd", "hello from the base layer\n"),
        .file("etc/shadow", "root:*::0:::::\n", mode: 0o640, gid: 42),
        .dir("gone-dir"), .file("gone-dir/a", "a\n"), .dir("gone-dir/sub"), .file("gone-dir/sub/b", "b\n"),
        .dir("opq"), .file("opq/old", "old\n"), .dir("opq/olddir"), .file("opq/olddir/x", "x\n"),
        .dir("home"),
        .dir("home/user", mode: 0o750, uid: 1000, gid: 1000),
        at(.file("home/user/owned.txt", "owned by 1000\n", mode: 0o640, uid: 1000, gid: 1000), mtime: 1_000_000_000),
        .dir("dev"),
        .char("dev/null", 1, 3),
        .fifo("dev/fifo"),
        .dir("x"),
        with(.file("x/user-xattr", "has user.x\n"), xattrs: [("user.x", Array("value".utf8))]),
        with(.dir("x/dir-xattr"), xattrs: [("user.x", Array("on a dir".utf8))]),
        .dir("café"), .file("café/naïve.txt", "naïve café\n"),
        .dir("日本語"), .file("日本語/ファイル.txt", "日本語\n"),
        .dir("long"), .dir("long/\(D)"), .file("long/\(D)/\(F)", "long name\n"),
        .symlink("long/link-to-long-target", "\(D)/\(F)"),
        .file("swap", "a file that becomes a dir\n"),
        .dir("swapdir"), .file("swapdir/child", "child\n"),
        .dir("sticky", mode: 0o1777),
        .file("empty"),
    ]

    /// Whiteouts, an opaque dir, replacements and hardlinks old and new.
    static let middle: [TarEntry] = [
        .whiteout("", "gone-dir"),
        .dir("etc"),
        .whiteout("etc", "motd"),
        at(.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"), mtime: 1_700_000_100),
        .dir("opq"), .opaque("opq"), .file("opq/new", "new\n"),
        .dir("bin", mode: 0o755),
        .file("bin/tool2", "tool2\n", mode: 0o755),
        .hardlink("bin/tool2-hl", "bin/tool2"),
        .hardlink("bin/tool-hl2", "bin/tool"),   // a hardlink to a file of the layer below
        .dir("swap"), .file("swap/inner", "inner\n"),
        .file("swapdir", "a dir that became a file\n"),
        .dir("x"),
        with(.file("x/user-xattr", "has user.x, changed\n"), xattrs: [("user.x", Array("value2".utf8))]),
    ]

    /// A whiteout of one name of a hardlinked file, and of a file in a dir not named here.
    static let top: [TarEntry] = [
        .whiteout("bin", "tool-hl"),
        .whiteout("etc", "shadow"),
        .file("added-last", "top\n"),
    ]

    /// Writes `entries` as a tar file; returns its path.
    static func writeTar(_ entries: [TarEntry], to path: String) -> String {
        TarBuilder.write(entries, to: path)
    }

    /// Writes an OCI image layout at `layout` with one image tagged `tag` whose layers are these
    /// tar files, gzip-compressed here (`gzip -n`); the diffIDs are the sha256 of the tars.
    static func writeImage(_ layout: String, tarFiles: [String], tag: String) throws {
        var layers = [TestLayout.Layer]()
        for tar in tarFiles {
            let tarData = try #require(FileManager.default.contents(atPath: tar))
            let gz = try bash(#"gzip -n -9 -c "$1" | base64 -w0"#, tar)
            layers.append(TestLayout.Layer(blob: try #require(Data(base64Encoded: gz)), diffID: DigestOracle.sha256(tarData),
                                           mediaType: ImageSpec.gzipLayerMediaType))
        }
        try TestLayout.write(layout, layers: layers, tag: tag, created: "2023-11-14T22:13:20Z", command: ["/bin/sh"],
                             platform: ImageSpec.Platform(architecture: "amd64", os: "linux"), indexMediaType: ImageSpec.indexMediaType)
    }

    /// `umoci unpack --image layout:tag bundle`; returns bundle/rootfs.
    static func umociUnpack(_ layout: String, tag: String, bundle: String) throws -> String {
        let r = try run(try requireTool("umoci"), ["unpack", "--image", "\(layout):\(tag)", bundle])
        try #require(r.status == 0, "umoci failed: \(r.stderr)")
        return bundle + "/rootfs"
    }

    /// LayerKit's unpack of the same image (what `layertool unpack --image` does).
    static func layerKitUnpack(_ layout: String, tag: String, to dest: String) throws {
        let image = try OCIImageLayout(path: layout).resolve(tag)
        let inputs = image.layers.map {
            LayerInput(source: $0.source, expecting: LayerExpectation(blobDigest: $0.descriptor.digest, diffID: $0.diffID))
        }
        let summaries = try Unpacker().unpack(inputs, to: dest)
        for s in summaries { #expect(s.warnings.isEmpty, "warnings: \(s.warnings)") }
    }

    static func layerKitUnpack(files: [String], to dest: String) throws {
        let summaries = try Unpacker().unpack(files.map { LayerInput(source: .path($0)) }, to: dest)
        for s in summaries { #expect(s.warnings.isEmpty, "warnings: \(s.warnings)") }
    }

    /// Expects the peer's tree and LayerKit's to be equal entry by entry; returns both snapshots.
    static func expectSameTree(_ peer: String, _ peerName: String, _ ours: String, dirMtimes: Bool,
                               sourceLocation: SourceLocation = #_sourceLocation) -> (TreeSnapshot, TreeSnapshot) {
        let theirs = TreeSnapshot.unpacked(peer, dirMtimes: dirMtimes), mine = TreeSnapshot.unpacked(ours, dirMtimes: dirMtimes)
        TreeSnapshot.expectSame(theirs, peerName, mine, "LayerKit", sourceLocation: sourceLocation)
        return (theirs, mine)
    }

    /// Builds an image from `layers`, unpacks it with umoci and with LayerKit, and compares.
    @discardableResult
    static func compareWithUmoci(_ layers: [[TarEntry]], in tmp: TempDir, label: String, dirMtimes: Bool = false,
                                 sourceLocation: SourceLocation = #_sourceLocation) throws -> (umoci: TreeSnapshot, layerKit: TreeSnapshot) {
        let tars = layers.enumerated().map { writeTar($1, to: tmp.sub("\(label)-\($0).tar")) }
        let layout = tmp.sub("\(label)-layout")
        try writeImage(layout, tarFiles: tars, tag: label)
        let umociRoot = try umociUnpack(layout, tag: label, bundle: tmp.sub("\(label)-bundle"))
        let ours = tmp.sub("\(label)-layertool")
        try layerKitUnpack(layout, tag: label, to: ours)
        return expectSameTree(umociRoot, "umoci (\(label))", ours, dirMtimes: dirMtimes, sourceLocation: sourceLocation)
    }

    /// GNU tar and bsdtar, extracting as root with everything preserved.
    static func gnuTarExtract(_ layer: String, into dir: String) throws {
        let r = try run(try requireTool("tar"), ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", layer, "-C", dir])
        try #require(r.status == 0, "tar failed: \(r.stderr)")
    }

    static func bsdtarExtract(_ layer: String, into dir: String) throws {
        let r = try run(try requireTool("bsdtar"), ["--numeric-owner", "-xpf", layer, "-C", dir])
        try #require(r.status == 0, "bsdtar failed: \(r.stderr)")
    }
}

@Suite struct InteropTests {
    // MARK: - umoci

    @Test(.requires(Interop.umoci + [.tools("getcap")]))
    func multiLayerImageMatchesUmoci() throws {
        let tmp = TempDir("interop-umoci")
        let (_, mine) = try Interop.compareWithUmoci([Interop.base, Interop.middle, Interop.top], in: tmp, label: "multi")
        let ours = tmp.sub("multi-layertool")

        // And the result is what the layers say, so "equal" is not "equally wrong".
        let n = mine.nodes
        for gone in ["gone-dir", "etc/motd", "etc/shadow", "opq/old", "opq/olddir", "bin/tool-hl"] {
            #expect(n[gone] == nil, "\(gone) should be gone")
        }
        #expect(n.keys.filter { $0.split(separator: "/").last!.hasPrefix(".wh.") }.isEmpty)
        #expect(Set(n.keys.filter { $0.hasPrefix("opq/") }) == ["opq/new"])
        #expect(n["swap"]?.type == "dir" && n["swap/inner"]?.type == "file")
        #expect(n["swapdir"]?.type == "file" && n["swapdir/child"] == nil)
        #expect(n["bin/tool"]?.linkGroup != nil && n["bin/tool"]?.linkGroup == n["bin/tool-hl2"]?.linkGroup)
        #expect(n["bin/tool2"]?.linkGroup != nil && n["bin/tool2"]?.linkGroup == n["bin/tool2-hl"]?.linkGroup)
        #expect(n["bin/su"]?.mode == 0o4755 && n["bin/wall"]?.mode == 0o2755 && n["bin/wall"]?.gid == 5)
        #expect(n["bin/ping"]?.xattrs["security.capability"] == Interop.capNetRaw)
        #expect(n["x/user-xattr"]?.xattrs["user.x"] == Array("value2".utf8))
        #expect(n["x/dir-xattr"]?.xattrs["user.x"] == Array("on a dir".utf8))
        #expect(n["home/user/owned.txt"].map { [$0.uid, $0.gid] } == [1000, 1000])
        #expect(n["home/user/owned.txt"]?.mtime == 1_000_000_000)
        #expect(n["dev/null"]?.type == "char" && n["dev/null"]?.content == "1:3")
        #expect(n["dev/fifo"]?.type == "fifo")
        #expect(n["café/naïve.txt"] != nil && n["日本語/ファイル.txt"] != nil)
        #expect(n["long/\(Interop.D)/\(Interop.F)"]?.type == "file")
        #expect(n["long/link-to-long-target"]?.content == "\(Interop.D)/\(Interop.F)")
        #expect(n["sticky"]?.mode == 0o1777)
        let out = try run(try requireTool("getcap"), [ours + "/bin/ping"]).stdout
        #expect(out.contains("cap_net_raw") && out.contains("ep"), "getcap: \(out)")
    }

    @Test(.requires(Interop.umoci))
    func onlyOverlayfsOwnXattrsAreLeftOut() throws {
        // By design (XattrPolicy) LayerKit never applies overlayfs's own xattrs (trusted.overlay.*,
        // user.overlay.*) from an archive: they would forge whiteouts and opaque dirs. Other
        // trusted.* are applied, as umoci does. That is the only xattr difference allowed.
        let tmp = TempDir("interop-umoci-xattrs")
        let xattrs: [(String, [UInt8])] = [
            ("trusted.foo", Array("t".utf8)), ("user.overlay.opaque", Array("y".utf8)),
            ("user.ok", Array("u".utf8)), ("security.capability", Interop.capNetRaw),
        ]
        let layout = tmp.sub("layout")
        try Interop.writeImage(layout, tarFiles: [Interop.writeTar([Interop.with(.file("f", "f\n"), xattrs: xattrs),
                                                                    Interop.with(.dir("d"), xattrs: Array(xattrs.prefix(3)))],
                                                                   to: tmp.sub("x.tar"))], tag: "x")
        let umociRoot = try Interop.umociUnpack(layout, tag: "x", bundle: tmp.sub("bundle"))
        let ours = tmp.sub("layertool")
        try Interop.layerKitUnpack(layout, tag: "x", to: ours)
        var theirs = TreeSnapshot.unpacked(umociRoot, dirMtimes: true)
        let mine = TreeSnapshot.unpacked(ours, dirMtimes: true)
        #expect(theirs.nodes["f"]?.xattrs.count == 4, "umoci applies all four: \(theirs.nodes["f"]?.xattrs.keys.sorted() ?? [])")
        for path in ["f", "d"] {
            theirs.nodes[path]?.xattrs["user.overlay.opaque"] = nil
        }
        let diffs = theirs.differences(from: mine)
        #expect(diffs.isEmpty, "umoci (first) and LayerKit (second) differ:\n\(diffs.joined(separator: "\n"))")
        #expect(mine.nodes["f"]?.xattrs.keys.sorted() == ["security.capability", "trusted.foo", "user.ok"])
        #expect(mine.nodes["d"]?.xattrs.keys.sorted() == ["trusted.foo", "user.ok"])
    }

    @Test(.requires(Interop.umoci + [.tools("zstd")]))
    func fixtureLayersMatchUmoci() throws {
        // basic.tar (gzip) alone, and the busybox image with its zstd layer re-encoded as gzip
        // (same diffIDs), and whiteouts.tar over the lower tree fixtures/README.md describes.
        let tmp = TempDir("interop-umoci-fixtures")
        let layers = fixturesDir + "/layers"
        let bb1 = tmp.sub("bb1.tar"), bb2 = tmp.sub("bb2.tar")
        _ = try bash(#"gzip -dc < "$1" > "$2"; zstd -q -dc < "$3" > "$4""#,
                              BusyboxFixture.layerBlob(0), bb1, BusyboxFixture.layerBlob(1), bb2)
        let lower = Interop.writeTar([
            .dir("gone-dir"), .file("gone-dir/x", "x\n"), .dir("gone-dir/sub"), .file("gone-dir/sub/y"),
            .dir("dir"), .file("dir/file1", "1\n"), .file("dir/other", "other\n"),
            .dir("opq"), .file("opq/old", "old\n"),
        ], to: tmp.sub("lower.tar"))
        let images: [(String, [String])] = [
            ("basic", [layers + "/basic.tar"]),
            ("busybox", [bb1, bb2]),
            ("whiteouts", [lower, layers + "/whiteouts.tar"]),
        ]
        for (tag, tars) in images {
            let layout = tmp.sub("layout-" + tag)
            try Interop.writeImage(layout, tarFiles: tars, tag: tag)
            let umociRoot = try Interop.umociUnpack(layout, tag: tag, bundle: tmp.sub("bundle-" + tag))
            let ours = tmp.sub("layertool-" + tag)
            try Interop.layerKitUnpack(layout, tag: tag, to: ours)
            // One layer names every dir it has, so dir mtimes must agree too (with more layers,
            // umoci also restores the mtime of a dir an upper layer changes without naming it).
            let (_, mine) = Interop.expectSameTree(umociRoot, "umoci (\(tag))", ours, dirMtimes: tag == "basic")
            if tag == "whiteouts" {
                #expect(Set(mine.nodes.keys) == [".", "dir", "dir/other", "opq", "opq/new"])
            }
        }
    }

    // MARK: - Known differences (LayerKit bugs)

    /// Entries the archive gives to 0:0, in a setgid dir owned by group 50. A new file in a
    /// setgid dir takes the dir's group, so the archive's group must be set explicitly even when
    /// it is the caller's own. GNU tar, bsdtar and umoci all give 0:0.
    static let setgidDirEntries: [TarEntry] = [
        .dir("g", mode: 0o2775, gid: 50),
        .file("g/file", "f\n"),
        .dir("g/sub"),
        .symlink("g/link", "file"),
        .fifo("g/fifo"),
        .file("g/owned-by-7", "7\n", uid: 7),
    ]

    static func expectArchiveGroups(_ snap: TreeSnapshot, _ tool: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(snap.nodes["g"].map { [$0.gid, $0.mode] } == [50, 0o2775], "\(tool)", sourceLocation: sourceLocation)
        for path in ["g/file", "g/sub", "g/link", "g/fifo", "g/owned-by-7"] {
            #expect(snap.nodes[path]?.gid == 0, "\(tool): \(path) has gid \(snap.nodes[path]?.gid ?? 9999), the archive says 0",
                    sourceLocation: sourceLocation)
        }
    }

    @Test(.requires(Interop.umoci + [.tools("tar", "bsdtar")]))
    func entriesInASetgidDirGetTheArchiveGroup() throws {
        let tmp = TempDir("interop-setgid")
        let tar = Interop.writeTar(Self.setgidDirEntries, to: tmp.sub("setgid.tar"))
        let ours = tmp.sub("layertool")
        try Interop.layerKitUnpack(files: [tar], to: ours)
        let mine = TreeSnapshot.unpacked(ours, dirMtimes: true)
        Self.expectArchiveGroups(mine, "LayerKit")
        for (name, extract) in [("GNU tar", Interop.gnuTarExtract), ("bsdtar", Interop.bsdtarExtract)] as [(String, (String, String) throws -> Void)] {
            let theirs = tmp.mkdir(name.replacingOccurrences(of: " ", with: "-"))
            try extract(tar, theirs)
            Self.expectArchiveGroups(TreeSnapshot.unpacked(theirs, dirMtimes: true), name)
            _ = Interop.expectSameTree(theirs, name, ours, dirMtimes: true)
        }
        // The same in an image, in one layer and with the dir in the layer below.
        let (umoci, _) = try Interop.compareWithUmoci([Self.setgidDirEntries], in: tmp, label: "one")
        Self.expectArchiveGroups(umoci, "umoci")
        try Interop.compareWithUmoci([[Self.setgidDirEntries[0]], Array(Self.setgidDirEntries.dropFirst())], in: tmp, label: "two")
    }

    @Test(.requires(Interop.umoci))
    func redeclaredDirTakesTheOwnerOfTheEntry() throws {
        let tmp = TempDir("interop-redeclared-owner")
        let (umoci, mine) = try Interop.compareWithUmoci([
            [.dir("d", mode: 0o755, uid: 5, gid: 6), .file("d/f", "f\n")],
            [.dir("d", mode: 0o750)],
        ], in: tmp, label: "owner")
        #expect(umoci.nodes["d"].map { [$0.uid, $0.gid, $0.mode] } == [0, 0, 0o750])
        #expect(mine.nodes["d"].map { [$0.uid, $0.gid, $0.mode] } == [0, 0, 0o750])
    }

    @Test(.requires(Interop.umoci))
    func redeclaredDirTakesTheXattrsOfTheEntry() throws {
        let tmp = TempDir("interop-redeclared-xattrs")
        let (umoci, mine) = try Interop.compareWithUmoci([
            [Interop.with(.dir("a"), xattrs: [("user.old", Array("1".utf8))]), .file("a/f", "f\n"),
             Interop.with(.dir("b"), xattrs: [("user.old", Array("1".utf8))])],
            [Interop.with(.dir("a"), xattrs: [("user.new", Array("2".utf8))]), .dir("b")],
        ], in: tmp, label: "xattrs")
        for snap in [umoci, mine] {
            #expect(snap.nodes["a"]?.xattrs == ["user.new": Array("2".utf8)])
            #expect(snap.nodes["b"]?.xattrs == [:])
        }
    }

    // MARK: - GNU tar and bsdtar

    @Test(.requires(Interop.extractAsRoot, .tools("tar")))
    func plainLayersMatchGNUTar() throws {
        try compareWithTar("GNU tar", Interop.gnuTarExtract)
    }

    @Test(.requires(Interop.extractAsRoot, .tools("bsdtar")))
    func plainLayersMatchBsdtar() throws {
        try compareWithTar("bsdtar", Interop.bsdtarExtract)
    }

    private func compareWithTar(_ name: String, _ extract: (String, String) throws -> Void,
                                sourceLocation: SourceLocation = #_sourceLocation) throws {
        let tmp = TempDir("interop-tar")
        let layers = [
            ("base", Interop.writeTar(Interop.base, to: tmp.sub("base.tar"))),
            ("basic", fixturesDir + "/layers/basic.tar"),
            ("busybox-layer1", BusyboxFixture.layerBlob(0)),
        ]
        for (label, layer) in layers {
            let theirs = tmp.mkdir("\(label)-peer")
            try extract(layer, theirs)
            let ours = tmp.sub("\(label)-layertool")
            try Interop.layerKitUnpack(files: [layer], to: ours)
            let (_, mine) = Interop.expectSameTree(theirs, "\(name) (\(label))", ours, dirMtimes: true, sourceLocation: sourceLocation)
            if label == "base" {
                #expect(mine.nodes["bin/ping"]?.xattrs["security.capability"] == Interop.capNetRaw, sourceLocation: sourceLocation)
            }
        }
    }
}
