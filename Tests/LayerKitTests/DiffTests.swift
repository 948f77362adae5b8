import CLayerSys
import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct DiffTests {
    /// diff(OLD, NEW) applied onto a copy of OLD gives NEW, entry by entry.
    @Test(arguments: 0..<24)
    func roundTripOfRandomChanges(_ seed: Int) throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        var gen = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &* 7919 &+ 17), root: old)
        for _ in 0..<60 { gen.addEntry() }
        let new = tmp.sub("new")
        try copyTree(old, new)
        var mutator = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &+ 1_000_003), root: new, files: gen.files, dirs: gen.dirs)
        for _ in 0..<25 { mutator.mutate() }

        let compression: Compression = [.none, .gzip, .zstd][seed % 3]
        let layer = tmp.sub("layer")
        let result = try LayerDiffer(options: DiffOptions(compression: compression)).write(.trees(old: old, new: new), toFile: layer)
        #expect(result.descriptor.mediaType == "application/vnd.oci.image.layer.v1.tar" + compression.mediaTypeSuffix)

        let applied = tmp.sub("applied")
        try copyTree(old, applied)
        let summary = try LayerApplier().apply(.path(layer), to: applied)
        #expect(summary.blobDigest == result.descriptor.digest)
        #expect(summary.diffID == result.diffID)
        #expect(summary.blobSize == result.descriptor.size)

        let want = TreeSnapshot(new, options: .init(dirMtimes: true))
        let got = TreeSnapshot(applied, options: .init(dirMtimes: true))
        #expect(!TreeSnapshot(old, options: .init(dirMtimes: true)).differences(from: want).isEmpty, "the mutations changed something")
        #expect(result.entryCount > 0)
        let differences = want.differences(from: got)
        #expect(differences.isEmpty, Comment(rawValue: "seed \(seed):\n" + differences.prefix(20).joined(separator: "\n")))
    }

    /// A full first layer (empty OLD) and an upper dir are written while they are walked; the
    /// layer is the same, byte for byte, as the one written after a full walk, and applies to NEW.
    @Test(arguments: 0..<8)
    func streamedFullLayersEqualWalkedOnes(_ seed: Int) throws {
        let tmp = TempDir()
        let new = tmp.mkdir("new")
        var gen = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &* 104_729 &+ 3), root: new)
        for _ in 0..<80 { gen.addEntry() }
        let empty = tmp.mkdir("empty")
        var walked = DiffOptions(compression: .none)
        walked.streamFullLayers = false
        var streamed = walked
        streamed.streamFullLayers = true
        for source in [ChangeSource.trees(old: empty, new: new), .upper(new)] {
            let a = try LayerDiffer(options: walked).write(source, toFile: tmp.sub("walked.tar"))
            let b = try LayerDiffer(options: streamed).write(source, toFile: tmp.sub("streamed.tar"))
            #expect(a == b, "seed \(seed), \(source)")
            #expect(FileManager.default.contentsEqual(atPath: tmp.sub("walked.tar"), andPath: tmp.sub("streamed.tar")), "seed \(seed), \(source)")
        }
        let applied = tmp.mkdir("applied")
        _ = try LayerApplier().apply(.path(tmp.sub("streamed.tar")), to: applied)
        let want = TreeSnapshot(new), got = TreeSnapshot(applied)
        #expect(want.differences(from: got).isEmpty, Comment(rawValue: want.differences(from: got).prefix(10).joined(separator: "\n")))
    }

    @Test func sameSizeSameMtimeContentChangeIsFound() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        createFile(old + "/f", "aaaa")
        var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 0), timespec(tv_sec: 1_600_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, old + "/f", &times, 0)
        let new = tmp.sub("new")
        try copyTree(old, new)
        let fd = open(new + "/f", O_WRONLY)
        #expect(pwrite(fd, "bbbb", 4, 0) == 4)
        close(fd)
        utimensat(AT_FDCWD, new + "/f", &times, 0)
        let layer = tmp.sub("l.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: layer)
        #expect(try run(try requireTool("tar"), ["-tf", layer]).stdout == "f\n")
    }

    /// Regular files are compared off the walk, each looked at either by name (stat, xattrs by
    /// name) or through open fds (when the last file's bytes had to be read): in a dir mixing
    /// whole-second and sub-second mtimes, every change is found whichever way it was looked at:
    /// an xattr added, changed bytes under the same size and mtime, a mode; nothing else.
    @Test func everyKindOfFileChangeIsFoundWhicheverWayTheFileIsOpened() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        mkdir(old + "/d", 0o755)
        for i in 0..<300 {
            let path = old + "/d/f\(String(format: "%03d", i))"
            createFile(path, String(repeating: "x", count: 1 + i % 50))
            var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 0), timespec(tv_sec: 1_600_000_000, tv_nsec: i % 3 == 0 ? 0 : 500)]
            utimensat(AT_FDCWD, path, &times, 0)
        }
        let new = tmp.sub("new")
        try copyTree(old, new)
        var expected = Set<String>()
        for i in 0..<300 {
            let name = "d/f\(String(format: "%03d", i))"
            let path = new + "/" + name
            var st = stat()
            try #require(lstat(path, &st) == 0)
            var times = [st.st_atim, st.st_mtim]
            if i % 7 == 0 {
                let value = "v\(i)"
                #expect(setxattr(path, "user.k", value, value.utf8.count, 0) == 0)
                expected.insert(name)
            } else if i % 11 == 0 && i % 3 == 0 {
                let fd = open(path, O_WRONLY)
                #expect(pwrite(fd, "y", 1, 0) == 1)
                close(fd)
                expected.insert(name)
            } else if i % 13 == 0 {
                chmod(path, 0o600)
                expected.insert(name)
            }
            utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
        }
        let layer = tmp.sub("l.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: layer)
        let listed = Set(try run(try requireTool("tar"), ["-tf", layer]).stdout.split(separator: "\n").map(String.init))
        #expect(listed == expected.union(["d/"]), "extra: \(listed.subtracting(expected).sorted()), missing: \(expected.subtracting(listed).sorted())")
    }

    @Test func noChangeGivesAnEmptyLayer() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        var gen = TreeGenerator(rng: SeededRandom(state: 5), root: old)
        for _ in 0..<80 { gen.addEntry() }
        let new = tmp.sub("new")
        try copyTree(old, new)
        let result = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: tmp.sub("l.tar"))
        #expect(result.entryCount == 0)
        #expect(result.tarSize == 1024)
    }

    /// A file dated before 1970 with a sub-second part (st_mtim (-86401 s, 250000000 ns)) is
    /// written with its whole seconds: LayerKit reads the layer back (a negative PAX time with a
    /// fraction is ambiguous between Go and libarchive, and was written 1.5 s off) and applies
    /// -86401 s; a time after the epoch keeps its nanoseconds. Found by the upper-diff fuzz target.
    @Test func aTimeBeforeTheEpochIsWrittenInWholeSecondsAndReadBack() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        let new = tmp.mkdir("new")
        for (name, time) in [("before", timespec(tv_sec: -86_401, tv_nsec: 250_000_000)),
                             ("after", timespec(tv_sec: 1_600_000_000, tv_nsec: 123_456_789))] {
            createFile(new + "/" + name, name)
            var times = [time, time]
            #expect(utimensat(AT_FDCWD, new + "/" + name, &times, 0) == 0)
        }
        let layer = tmp.sub("l.tar")
        let result = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: layer)
        let inspected = try LayerApplier().inspect(.path(layer), validate: true)
        #expect(inspected.diffID == result.diffID)
        let applied = tmp.mkdir("applied")
        _ = try LayerApplier().apply(.path(layer), to: applied)
        var st = stat()
        #expect(lstat(applied + "/before", &st) == 0)
        #expect(st.st_mtim.tv_sec == -86_401 && st.st_mtim.tv_nsec == 0)
        #expect(lstat(applied + "/after", &st) == 0)
        #expect(st.st_mtim.tv_sec == 1_600_000_000 && st.st_mtim.tv_nsec == 123_456_789)
    }

    /// An error names an entry on one line whatever bytes its name holds (a newline in the name
    /// of an upper dir's file came out raw). Found by the upper-diff fuzz target.
    @Test func anEntryNameWithANewlineIsEscapedInTheError() throws {
        let tmp = TempDir()
        let upper = tmp.mkdir("upper")
        let file = upper + "/new\nline"
        createFile(file)
        // A redirect xattr (user. or, as root, trusted.) makes the diff refuse the entry.
        let names: [String] = ["user.overlay.redirect", "trusted.overlay.redirect"]
        let marked = names.contains { (name: String) -> Bool in setxattr(file, name, "/x", 2, 0) == 0 }
        try #require(marked, "cannot set an overlay redirect xattr in \(upper)")
        do throws(LayerError) {
            _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(upper), toFile: tmp.sub("l.tar"))
            Issue.record("an upper dir using redirect_dir was diffed")
        } catch {
            #expect(error.description.contains("entry \"new\\nline\""), "\(error)")
            #expect(!error.description.contains("\n"), "\(error)")
        }
    }

    @Test func outputIsReproducibleAndEpochClamped() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        let new = tmp.mkdir("new")
        var gen = TreeGenerator(rng: SeededRandom(state: 99), root: new)
        for _ in 0..<50 { gen.addEntry() }
        var options = DiffOptions(compression: .gzip)
        options.sourceDateEpoch = 1_500_000_000
        let a = try LayerDiffer(options: options).write(.trees(old: old, new: new), toFile: tmp.sub("a.tar.gz"))
        let b = try LayerDiffer(options: options).write(.trees(old: old, new: new), toFile: tmp.sub("b.tar.gz"))
        #expect(a == b)
        #expect(FileManager.default.contents(atPath: tmp.sub("a.tar.gz")) == FileManager.default.contents(atPath: tmp.sub("b.tar.gz")))
        let listing = try run(try requireTool("tar"), ["--full-time", "-tvzf", tmp.sub("a.tar.gz")])
        #expect(listing.status == 0)
        for line in listing.stdout.split(separator: "\n") {
            #expect(line.contains("2017-07-14"), "mtime clamped to SOURCE_DATE_EPOCH: \(line)")
        }
    }

    @Test func deletedTreeIsOneWhiteoutBeforeTheDirsOtherEntries() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        for p in ["d", "d/gone", "d/gone/sub", "d/z"] { mkdir(old + "/" + p, 0o755) }
        createFile(old + "/d/gone/sub/f")
        let new = tmp.sub("new")
        try copyTree(old, new)
        try FileManager.default.removeItem(atPath: new + "/d/gone")
        createFile(new + "/d/a-new", "n")
        let layer = tmp.sub("l.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: layer)
        let names = try run(try requireTool("tar"), ["-tf", layer]).stdout.split(separator: "\n").map(String.init)
        #expect(names == ["d/", "d/.wh.gone", "d/a-new"])
    }

    @Test func anOutputThatIsNotARegularFileIsWrittenIntoNeverReplaced() throws {
        let tmp = TempDir()
        let fifo = tmp.sub("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        let new = tmp.mkdir("new")
        createFile(new + "/f", "x")
        // A reader on the fifo collects the layer while the differ writes into it.
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: "/bin/sh")
        reader.arguments = ["-c", "cat '\(fifo)' > '\(tmp.sub("copy.tar"))'"]
        try reader.run()
        let result = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: tmp.mkdir("old"), new: new), toFile: fifo)
        reader.waitUntilExit()
        #expect(lstatOrNil(fifo).map { $0.st_mode & 0o170000 } == 0o010000, "the fifo is still a fifo")
        let copy = try #require(FileManager.default.contents(atPath: tmp.sub("copy.tar")))
        #expect(Digest.sha256(of: [UInt8](copy)) == result.diffID)
        #expect(result.descriptor.digest == result.diffID, "uncompressed: the blob is the tar")
    }

    /// A full disk (a 256 KiB tmpfs in a private mount namespace) fails the diff with the reason
    /// and leaves no partial output behind.
    @Test(.requires(.root(because: "mounting a tmpfs"), .tools("unshare")))
    func diskFullFailsCleanly() throws {
        let tmp = TempDir()
        let new = tmp.mkdir("new")
        var gen = TreeGenerator(rng: SeededRandom(state: 11), root: new)
        for _ in 0..<40 { gen.addEntry() }
        createFile(new + "/big", bytes: Data((0..<2_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) }))
        let full = tmp.mkdir("full")
        let script = """
            mount -t tmpfs -o size=256k tmpfs '\(full)' || exit 99
            '\(Layertool.path)' diff '\(tmp.mkdir("old"))' '\(new)' -o '\(full)/layer.tar'
            echo "status=$?"
            echo "left=$(ls -A '\(full)' | wc -l)"
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", "sh", "-c", script])
        #expect(r.status != 99, "tmpfs mount failed: \(r.stderr)")
        #expect(r.stdout.contains("status=1"), Comment(rawValue: r.stdout + r.stderr))
        #expect(r.stdout.contains("left=0"), "no partial output: \(r.stdout)")
        #expect(r.stderr.contains("No space left on device"), Comment(rawValue: r.stderr))
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
    }

    @Test func missingTreeFailsAndLeavesNoOutput() throws {
        let tmp = TempDir()
        let out = tmp.sub("l.tar.gz")
        #expect {
            _ = try LayerDiffer().write(.trees(old: tmp.sub("nope"), new: tmp.path), toFile: out)
        } throws: { error in
            (error as? LayerError)?.description.contains("nope") ?? false
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path).isEmpty)
    }

    @Test func aufsStyleUpperDirs() throws {
        let tmp = TempDir()
        let lower = tmp.mkdir("lower")
        for p in ["etc", "etc/opq", "var"] { mkdir(lower + "/" + p, 0o755) }
        for p in ["etc/motd", "etc/opq/old", "var/log"] { createFile(lower + "/" + p, "l") }
        let upper = tmp.mkdir("upper")
        for p in ["etc", "etc/opq"] { mkdir(upper + "/" + p, 0o755) }
        createFile(upper + "/etc/.wh.motd")
        createFile(upper + "/etc/opq/.wh..wh..opq")
        createFile(upper + "/etc/opq/new", "n")
        createFile(upper + "/.wh.var")
        let layer = tmp.sub("l.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(upper), toFile: layer)
        let applied = tmp.sub("applied")
        try copyTree(lower, applied)
        _ = try LayerApplier().apply(.path(layer), to: applied)
        #expect(Set(TreeSnapshot(applied).nodes.keys) == [".", "etc", "etc/opq", "etc/opq/new"])
    }

    @Test(.requires(.tools("tar")))
    func sparseFilesStaySparse() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        let new = tmp.mkdir("new")
        let fd = open(new + "/sparse", O_CREAT | O_WRONLY, 0o644)
        ftruncate(fd, 1 << 30)
        pwrite(fd, "middle", 6, 1 << 29)
        close(fd)
        let layer = tmp.sub("l.tar")
        let result = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: layer)
        #expect(result.tarSize < 1 << 20, "holes are not written into the layer")
        let applied = tmp.mkdir("applied")
        _ = try LayerApplier().apply(.path(layer), to: applied)
        var st = stat()
        lstat(applied + "/sparse", &st)
        #expect(st.st_size == 1 << 30 && st.st_blocks * 512 < 1 << 20)
        #expect(TreeSnapshot.sha256(ofFile: applied + "/sparse") == TreeSnapshot.sha256(ofFile: new + "/sparse"))
        // GNU tar reads the same file back.
        let out = tmp.mkdir("gnutar")
        #expect(try run(try requireTool("tar"), ["-xf", layer, "-C", out]).status == 0)
        #expect(TreeSnapshot.sha256(ofFile: out + "/sparse") == TreeSnapshot.sha256(ofFile: new + "/sparse"))
    }

    @Test(.requires(.tools("tar", "bsdtar")))
    func gnuTarAndBsdtarReadTheLayerWithoutWarnings() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        let new = tmp.mkdir("new")
        var gen = TreeGenerator(rng: SeededRandom(state: 3), root: new)
        for _ in 0..<80 { gen.addEntry() }
        let layer = tmp.sub("l.tar.gz")
        _ = try LayerDiffer().write(.trees(old: old, new: new), toFile: layer)
        for (tool, args) in [("tar", ["--xattrs", "--xattrs-include=*", "-xpzf"]), ("bsdtar", ["-xpf"])] {
            let path = try requireTool(tool)
            let out = tmp.mkdir("out-\(tool)")
            let r = try run(path, args + [layer, "-C", out])
            #expect(r.status == 0 && r.stderr.isEmpty, "\(tool): \(r.stderr)")
            let listing = try run(path, ["-tvf", layer])
            #expect(listing.status == 0 && listing.stderr.isEmpty, "\(tool) -t: \(listing.stderr)")
            let differences = TreeSnapshot(new).differences(from: TreeSnapshot(out))
            #expect(differences.isEmpty, Comment(rawValue: "\(tool):\n" + differences.prefix(10).joined(separator: "\n")))
        }
    }
}
