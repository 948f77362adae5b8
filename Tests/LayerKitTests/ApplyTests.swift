import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ApplyTests {
    @Test func everyEntryTypeWithItsMetadata() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        var suid = TarEntry.file("bin/su", "su", mode: 0o4755, uid: 1000, gid: 1000)
        suid.mtimeNsec = 123_456_789
        var withXattrs = TarEntry.file("x", "x")
        withXattrs.xattrs = [("user.keep", Array("1".utf8)), ("trusted.overlay.opaque", Array("y".utf8)),
                             ("user.overlay.whiteout", Array("y".utf8)), ("security.selinux", Array("system_u:object_r:bin_t:s0".utf8))]
        var dir = TarEntry.dir("bin", mode: 0o750, uid: 7, gid: 8)
        dir.mtime = 1_600_000_000
        var link = TarEntry.symlink("bin/sh", "busybox")
        link.mtime = 1_500_000_000
        let entries: [TarEntry] = [
            dir, suid, link,
            .file("bin/busybox", "BB", mode: 0o755),
            .hardlink("bin/busybox-hl", "bin/busybox"),
            .fifo("run/fifo"),
            .char("dev/null", 1, 3),
            withXattrs,
            .file("empty", ""),
        ]
        try applyLayers([entries], onto: dest)

        let su = try #require(lstatOrNil(dest + "/bin/su"))
        #expect(su.st_mode & 0o7777 == 0o4755, "setuid survives the chown")
        #expect(su.st_uid == 1000 && su.st_gid == 1000)
        #expect(su.st_mtim.tv_sec == 1_700_000_000 && su.st_mtim.tv_nsec == 123_456_789)
        let bin = try #require(lstatOrNil(dest + "/bin"))
        #expect(bin.st_mode & 0o7777 == 0o750 && bin.st_uid == 7 && bin.st_gid == 8)
        #expect(bin.st_mtim.tv_sec == 1_600_000_000, "dir mtime set after its children were created")
        let sh = try #require(lstatOrNil(dest + "/bin/sh"))
        #expect(sh.st_mode & 0o170000 == 0o120000 && sh.st_mtim.tv_sec == 1_500_000_000)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: dest + "/bin/sh")) == "busybox")
        let bb = try #require(lstatOrNil(dest + "/bin/busybox"))
        let hl = try #require(lstatOrNil(dest + "/bin/busybox-hl"))
        #expect(bb.st_ino == hl.st_ino && bb.st_nlink == 2)
        #expect(lstatOrNil(dest + "/run/fifo").map { $0.st_mode & 0o170000 } == 0o010000)
        if isRoot {
            let null = try #require(lstatOrNil(dest + "/dev/null"))
            #expect(null.st_mode & 0o170000 == 0o020000 && null.st_rdev == makedevForTest(1, 3))
        }
        let x = TreeSnapshot.xattrs(dest + "/x", ignoring: [])
        #expect(x["user.keep"] == Array("1".utf8))
        #expect(x["trusted.overlay.opaque"] == nil, "overlay xattrs from an archive would forge whiteouts")
        #expect(x["user.overlay.whiteout"] == nil)
        #expect(x["security.selinux"].map { String(decoding: $0, as: UTF8.self) } != "system_u:object_r:bin_t:s0")
        #expect(contents(dest + "/empty") == "")
    }

    @Test func paxAccessTimesAreAppliedWithTheModificationTime() throws {
        // GNU tar's posix format records atime with nanoseconds and mtime without.
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        var f = TarEntry.file("f", "x")
        f.atime = (1_795_762_189, 598_646_034)
        var l = TarEntry.symlink("l", "f")
        l.atime = (1_795_762_190, 1)
        try applyLayers([[f, l]], onto: dest)
        let st = try #require(lstatOrNil(dest + "/f"))
        #expect(st.st_atim.tv_sec == 1_795_762_189 && st.st_atim.tv_nsec == 598_646_034)
        #expect(st.st_mtim.tv_sec == 1_700_000_000 && st.st_mtim.tv_nsec == 0)
        let ls = try #require(lstatOrNil(dest + "/l"))
        #expect(ls.st_mtim.tv_sec == 1_700_000_000 && ls.st_atim.tv_sec == 1_795_762_190)
    }

    @Test func implicitParentsAreCreated() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([[.file("a/b/c/file", "deep")]], onto: dest)
        #expect(contents(dest + "/a/b/c/file") == "deep")
        #expect(lstatOrNil(dest + "/a/b").map { $0.st_mode & 0o777 } == 0o755 & ~FileSystem.currentUmask())
    }

    @Test func missingDirsBehindRelativeSymlinksAreMadeWhereTheKernelResolvesThem() throws {
        // lib -> usr/lib, then lib/foo -> ../share/foo: the kernel reads ".." from usr/lib.
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([[.dir("usr"), .dir("usr/lib"), .symlink("lib", "usr/lib"),
                          .symlink("lib/foo", "../share/foo"), .file("lib/foo/file", "f")]], onto: dest)
        #expect(contents(dest + "/usr/share/foo/file") == "f")
        #expect(lstatOrNil(dest + "/share") == nil, "no dir made from the archive path")
    }

    @Test func whiteoutsRemoveLowerEntriesAndNeverAppear() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([
            [.dir("etc"), .file("etc/motd", "hi"), .dir("etc/tree"), .file("etc/tree/a"), .dir("etc/tree/sub"), .file("etc/tree/sub/b"),
             .file("keep", "k")],
            [.whiteout("etc", "motd"), .whiteout("etc", "tree"), .whiteout("", "does-not-exist")],
        ], onto: dest)
        let snap = TreeSnapshot(dest)
        #expect(Set(snap.nodes.keys) == [".", "etc", "keep"])
    }

    @Test(arguments: [true, false])
    func opaqueHidesLowerButKeepsThisLayerWhateverTheOrder(_ markerFirst: Bool) throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        let marker = TarEntry.opaque("d")
        var upper: [TarEntry] = [.dir("d"), .file("d/new", "new"), .dir("d/sub"), .file("d/sub/n2", "n2")]
        if markerFirst { upper.insert(marker, at: 1) } else { upper.append(marker) }
        try applyLayers([
            [.dir("d"), .file("d/old", "old"), .dir("d/sub"), .file("d/sub/old2"), .dir("d/olddir"), .file("d/olddir/x"), .file("outside", "o")],
            upper,
        ], onto: dest)
        let snap = TreeSnapshot(dest)
        #expect(Set(snap.nodes.keys) == [".", "d", "d/new", "d/sub", "d/sub/n2", "outside"])
    }

    @Test func whiteoutAfterSameLayerEntryHidesOnlyLowerContent() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([
            [.dir("d"), .file("d/lower")],
            [.dir("d"), .file("d/upper", "u"), .whiteout("", "d")],
        ], onto: dest)
        #expect(Set(TreeSnapshot(dest).nodes.keys) == [".", "d", "d/upper"])
    }

    @Test(arguments: [".wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh..."])
    func invalidWhiteoutNamesAreRejected(_ name: String) throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        #expect {
            try applyLayers([[.dir("etc"), .file(name)]], onto: dest)
        } throws: { error in
            guard let e = error as? LayerError else { return false }
            return e.kind == .invalidEntry && e.description.contains("whiteout")
        }
    }

    @Test func entriesReplaceEntriesOfAnotherType() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        let outside = tmp.mkdir("outside")
        createFile(outside + "/target", "untouched")
        try applyLayers([
            [.file("f2d", "file"), .dir("d2f"), .file("d2f/child"), .dir("d2l"), .file("d2l/c"),
             .symlink("l2f", outside + "/target"), .symlink("l2d", outside), .file("keep", "1")],
            [.dir("f2d"), .file("f2d/inside", "i"), .file("d2f", "now a file"), .symlink("d2l", "keep"),
             .file("l2f", "replaced the link"), .dir("l2d", mode: 0o700)],
        ], onto: dest)
        #expect(lstatOrNil(dest + "/f2d").map { $0.st_mode & 0o170000 } == 0o040000)
        #expect(contents(dest + "/f2d/inside") == "i")
        #expect(contents(dest + "/d2f") == "now a file")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: dest + "/d2l")) == "keep")
        #expect(lstatOrNil(dest + "/l2f").map { $0.st_mode & 0o170000 } == 0o100000)
        #expect(contents(dest + "/l2f") == "replaced the link")
        #expect(lstatOrNil(dest + "/l2d").map { $0.st_mode & 0o170000 } == 0o040000)
        #expect(contents(outside + "/target") == "untouched", "never written through a symlink")
        #expect(lstatOrNil(outside).map { $0.st_mode & 0o777 } != 0o700, "no chmod through a symlink")
    }

    @Test func dirOverDirMergesAndTakesTheNewMetadata() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([
            [.dir("d", mode: 0o755), .file("d/a")],
            [.dir("d", mode: 0o711, uid: 5, gid: 6), .file("d/b")],
        ], onto: dest)
        #expect(Set(TreeSnapshot(dest).nodes.keys) == [".", "d", "d/a", "d/b"])
        let d = try #require(lstatOrNil(dest + "/d"))
        #expect(d.st_mode & 0o7777 == 0o711)
        if isRoot { #expect(d.st_uid == 5 && d.st_gid == 6) }
    }

    @Test func hardlinksToLowerLayersAndToSymlinks() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([
            [.file("lower", "L"), .symlink("sym", "/etc/passwd")],
            [.hardlink("upper-link", "lower"), .hardlink("sym-link", "sym"), .hardlink("abs-link", "/lower")],
        ], onto: dest)
        let l = try #require(lstatOrNil(dest + "/lower"))
        #expect(lstatOrNil(dest + "/upper-link")?.st_ino == l.st_ino)
        #expect(lstatOrNil(dest + "/abs-link")?.st_ino == l.st_ino, "absolute hardlink targets are re-rooted")
        let s = try #require(lstatOrNil(dest + "/sym"))
        let sl = try #require(lstatOrNil(dest + "/sym-link"))
        #expect(sl.st_ino == s.st_ino && sl.st_mode & 0o170000 == 0o120000, "a hardlink to a symlink links the symlink")
    }

    @Test func hardlinkToAMissingTargetFailsNamingIt() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        #expect {
            try applyLayers([[.hardlink("l", "nope")]], onto: dest)
        } throws: { error in
            (error as? LayerError)?.description.contains("\"nope\" not found") ?? false
        }
    }

    @Test func longAndUTF8NamesAreKeptExactly() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        let long = String(repeating: "long-component/", count: 12) + "file-with-a-long-name.txt"
        let target = String(repeating: "../x/", count: 30) + "target"
        try applyLayers([[.file("café/naïve.txt", "utf8"), .file(long, "long"), .symlink("ln", target)]], onto: dest)
        #expect(contents(dest + "/café/naïve.txt") == "utf8")
        #expect(contents(dest + "/" + long) == "long")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: dest + "/ln")) == target)
    }

    @Test func nonDirectoryParentFailsLikeContainerd() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        #expect {
            try applyLayers([[.file("nondir", "f"), .file("nondir/foo/bar/baz")]], onto: dest)
        } throws: { error in
            guard let e = error as? LayerError else { return false }
            return e.entry == "nondir/foo/bar/baz" && e.reason.contains("not a directory")
        }
    }

    @Test(arguments: [TestCompression.none, .gzip, .zstd])
    func digestsMatchIndependentHashes(_ compression: TestCompression) throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        // Big enough to cross many pipeline chunks (1 MiB each, 8 in flight).
        var entries: [TarEntry] = [.dir("data")]
        var rng = SystemRandomNumberGenerator()
        for i in 0..<12 {
            let bytes = (0..<(900_000 + i)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            entries.append(TarEntry(kind: .file, path: "data/f\(i)", content: bytes))
        }
        let blobBytes = TarBuilder.build(entries, compression: compression)
        let tarBytes = TarBuilder.build(entries, compression: .none)
        let blob = tmp.sub("layer")
        createFile(blob, bytes: Data(blobBytes))
        let summary = try LayerApplier().apply(.path(blob), to: dest)
        #expect(summary.blobDigest == Digest.sha256(of: blobBytes))
        #expect(summary.diffID == Digest.sha256(of: tarBytes))
        #expect(summary.blobSize == Int64(blobBytes.count))
        #expect(summary.tarSize == Int64(tarBytes.count))
        #expect(summary.entryCount == 13)
        let expected: Compression = compression == .gzip ? .gzip : compression == .zstd ? .zstd : .none
        #expect(summary.compression == expected)
        for i in [0, 6, 11] {
            let got = FileManager.default.contents(atPath: dest + "/data/f\(i)").map { [UInt8]($0) }
            #expect(got == entries[i + 1].content)
        }
    }

    @Test func expectedDigestMismatchIsReported() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        let blob = TarBuilder.write([.file("a", "a")], to: tmp.sub("l.tar"))
        let wrong = Digest.sha256(of: Array("not it".utf8))
        #expect {
            _ = try LayerApplier().apply(.path(blob), to: dest, expecting: LayerExpectation(blobDigest: wrong))
        } throws: { error in
            guard let e = error as? LayerError else { return false }
            return e.kind == .digestMismatch && e.description.contains(wrong.description)
        }
    }

    @Test(.requires(.tools("tar")))
    func sparseFilesKeepTheirHoles() throws {
        let tar = try requireTool("tar")
        let tmp = TempDir()
        let src = tmp.mkdir("src")
        let fd = open(src + "/sparse", O_CREAT | O_WRONLY, 0o644)
        #expect(ftruncate(fd, 1 << 30) == 0)
        #expect(pwrite(fd, "end", 3, (1 << 30) - 3) == 3)
        #expect(pwrite(fd, "start", 5, 0) == 5)
        close(fd)
        let layer = tmp.sub("sparse.tar")
        let r = try run(tar, ["--sparse", "-cf", layer, "-C", src, "sparse"])
        #expect(r.status == 0)
        let dest = tmp.mkdir("dest")
        _ = try LayerApplier().apply(.path(layer), to: dest)
        let st = try #require(lstatOrNil(dest + "/sparse"))
        #expect(st.st_size == 1 << 30)
        #expect(st.st_blocks * 512 < 1 << 20, "holes are not written out")
        #expect(TreeSnapshot.sha256(ofFile: dest + "/sparse") == TreeSnapshot.sha256(ofFile: src + "/sparse"))
    }
}
