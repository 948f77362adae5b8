import CLayerSys
import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// A small deterministic random generator (SplitMix64), so every seed gives the same trees.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Builds random trees and random changes to them, with plain syscalls.
struct TreeGenerator {
    var rng: SeededRandom
    let root: String
    var files: [String] = []
    var dirs: [String] = [""]

    static let oddNames = ["plain", "with space", "café", "ünïcödé-名前", "dash-", ".hidden", "a.b.c", "x",
                           String(repeating: "long", count: 30), "wh.notawhiteout", "tab\tname", "quote\"d"]

    mutating func name() -> String {
        let base = Self.oddNames[Int(rng.next() % UInt64(Self.oddNames.count))]
        return "\(base)-\(rng.next() % 10_000)"
    }

    func full(_ rel: String) -> String { rel.isEmpty ? root : root + "/" + rel }

    mutating func randomDir() -> String { dirs[Int(rng.next() % UInt64(dirs.count))] }

    mutating func content() -> Data {
        let size = [0, 1, 100, 511, 512, 513, 4096, 70_000][Int(rng.next() % 8)]
        return Data((0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }

    /// mtimes with and without a sub-second part, as real trees have both.
    mutating func setTimes(_ path: String) {
        let sec = 1_600_000_000 + Int(rng.next() % 100_000_000)
        let nsec = rng.next() % 2 == 0 ? 0 : Int(rng.next() % 1_000_000_000)
        var times = [timespec(tv_sec: sec, tv_nsec: nsec), timespec(tv_sec: sec, tv_nsec: nsec)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    mutating func addEntry() {
        let dir = randomDir()
        let rel = dir.isEmpty ? name() : dir + "/" + name()
        let path = full(rel)
        switch rng.next() % 10 {
        case 0, 1:
            mkdir(path, 0o755)
            if rng.next() % 3 == 0 { chmod(path, 0o750) }
            dirs.append(rel)
        case 2:
            symlink(["../x", "/etc/passwd", "target", String(repeating: "deep/", count: 25)][Int(rng.next() % 4)], path)
        case 3 where !files.isEmpty:
            let target = files[Int(rng.next() % UInt64(files.count))]
            if link(full(target), path) == 0 { files.append(rel) }
        case 4 where isRoot:
            mkfifo(path, 0o640)
        case 5 where isRoot:
            mknod(path, 0o020644, makedevForTest(UInt32(1 + rng.next() % 10), UInt32(rng.next() % 300)))
        default:
            FileManager.default.createFile(atPath: path, contents: content())
            chmod(path, [0o644, 0o755, 0o600, 0o4755, 0o2755][Int(rng.next() % 5)])
            if isRoot && rng.next() % 4 == 0 { chown(path, 1000, 1000); chmod(path, 0o644) }
            if rng.next() % 4 == 0 { setxattr(path, "user.test", "v\(rng.next() % 3)", 2, 0) }
            files.append(rel)
        }
        setTimes(path)
    }

    /// One random change of the kinds a container makes.
    mutating func mutate() {
        guard files.count > 2 && dirs.count > 2 else { addEntry(); return }
        let f = files[Int(rng.next() % UInt64(files.count))]
        let p = full(f)
        var st = stat()
        guard lstat(p, &st) == 0 else { addEntry(); return }
        switch rng.next() % 11 {
        case 0: addEntry()
        case 1: unlink(p)                                         // delete a file
        case 2:                                                   // delete a dir tree
            let d = dirs[1 + Int(rng.next() % UInt64(dirs.count - 1))]
            try? FileManager.default.removeItem(atPath: full(d))
        case 3:                                                   // file -> dir
            unlink(p); mkdir(p, 0o755)
            FileManager.default.createFile(atPath: p + "/inside", contents: Data("in".utf8))
        case 4:                                                   // dir -> file
            let d = dirs[1 + Int(rng.next() % UInt64(dirs.count - 1))]
            try? FileManager.default.removeItem(atPath: full(d))
            FileManager.default.createFile(atPath: full(d), contents: Data("was a dir".utf8))
        case 5:                                                   // file -> symlink
            unlink(p); symlink("elsewhere", p)
        case 6: chmod(p, 0o600)                                   // metadata only
        case 7 where isRoot: chown(p, 42, 43)
        case 8:                                                   // same size, same mtime, new content
            if FileSystem.fileType(st) == 0o100000 && st.st_size > 0 {
                let fd = open(p, O_WRONLY)
                var b: UInt8 = 0
                pread(fd, &b, 1, 0)
                var flipped = b ^ 0xff
                pwrite(fd, &flipped, 1, 0)
                close(fd)
                var times = [st.st_atim, timespec(tv_sec: st.st_mtim.tv_sec, tv_nsec: 0)]
                // Restore the mtime (whole seconds, as in a tar-extracted tree).
                utimensat(AT_FDCWD, p, &times, 0)
            }
        case 9:                                                   // hardlink added / broken
            if st.st_nlink > 1 {
                let data = FileManager.default.contents(atPath: p)
                unlink(p)
                FileManager.default.createFile(atPath: p, contents: data)
            } else {
                let other = full(randomDir()) + "/hl-\(rng.next() % 1000)"
                link(p, other)
            }
        default:
            setxattr(p, "user.changed", "1", 1, 0)
        }
    }
}

/// Copies a tree exactly (cp -a keeps owners, modes, times, xattrs, hardlinks).
func copyTree(_ from: String, _ to: String) throws {
    let r = try run("/bin/cp", ["-a", from, to])
    #expect(r.status == 0, "cp -a: \(r.stderr)")
}

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
        var mutator = gen
        mutator = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &+ 1_000_003), root: new, files: gen.files, dirs: gen.dirs)
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
        FileManager.default.createFile(atPath: old + "/f", contents: Data("aaaa".utf8))
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
        #expect(try run(which("tar")!, ["-tf", layer]).stdout == "f\n")
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
            FileManager.default.createFile(atPath: new + "/" + name, contents: Data(name.utf8))
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
        FileManager.default.createFile(atPath: file, contents: Data())
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
        let listing = try run(which("tar")!, ["--full-time", "-tvzf", tmp.sub("a.tar.gz")])
        #expect(listing.status == 0)
        for line in listing.stdout.split(separator: "\n") {
            #expect(line.contains("2017-07-14"), "mtime clamped to SOURCE_DATE_EPOCH: \(line)")
        }
    }

    @Test func deletedTreeIsOneWhiteoutBeforeTheDirsOtherEntries() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        for p in ["d", "d/gone", "d/gone/sub", "d/z"] { mkdir(old + "/" + p, 0o755) }
        FileManager.default.createFile(atPath: old + "/d/gone/sub/f", contents: Data())
        let new = tmp.sub("new")
        try copyTree(old, new)
        try FileManager.default.removeItem(atPath: new + "/d/gone")
        FileManager.default.createFile(atPath: new + "/d/a-new", contents: Data("n".utf8))
        let layer = tmp.sub("l.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.trees(old: old, new: new), toFile: layer)
        let names = try run(which("tar")!, ["-tf", layer]).stdout.split(separator: "\n").map(String.init)
        #expect(names == ["d/", "d/.wh.gone", "d/a-new"])
    }

    @Test func anOutputThatIsNotARegularFileIsWrittenIntoNeverReplaced() throws {
        let tmp = TempDir()
        let fifo = tmp.sub("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        let new = tmp.mkdir("new")
        FileManager.default.createFile(atPath: new + "/f", contents: Data("x".utf8))
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
    @Test(.enabled(if: isRoot && which("unshare") != nil, "mounting a tmpfs needs root and unshare"))
    func diskFullFailsCleanly() throws {
        let tmp = TempDir()
        let new = tmp.mkdir("new")
        var gen = TreeGenerator(rng: SeededRandom(state: 11), root: new)
        for _ in 0..<40 { gen.addEntry() }
        FileManager.default.createFile(atPath: new + "/big", contents: Data((0..<2_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) }))
        let full = tmp.mkdir("full")
        let layertool = ProcessInfo.processInfo.environment["LAYERTOOL_BIN"] ?? repositoryRoot + "/.build/debug/layertool"
        let script = """
            mount -t tmpfs -o size=256k tmpfs '\(full)' || exit 99
            '\(layertool)' diff '\(tmp.mkdir("old"))' '\(new)' -o '\(full)/layer.tar'
            echo "status=$?"
            echo "left=$(ls -A '\(full)' | wc -l)"
            """
        let r = try run(which("unshare")!, ["-m", "--propagation", "private", "sh", "-c", script])
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
        for p in ["etc/motd", "etc/opq/old", "var/log"] { FileManager.default.createFile(atPath: lower + "/" + p, contents: Data("l".utf8)) }
        let upper = tmp.mkdir("upper")
        for p in ["etc", "etc/opq"] { mkdir(upper + "/" + p, 0o755) }
        FileManager.default.createFile(atPath: upper + "/etc/.wh.motd", contents: Data())
        FileManager.default.createFile(atPath: upper + "/etc/opq/.wh..wh..opq", contents: Data())
        FileManager.default.createFile(atPath: upper + "/etc/opq/new", contents: Data("n".utf8))
        FileManager.default.createFile(atPath: upper + "/.wh.var", contents: Data())
        let layer = tmp.sub("l.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(upper), toFile: layer)
        let applied = tmp.sub("applied")
        try copyTree(lower, applied)
        _ = try LayerApplier().apply(.path(layer), to: applied)
        #expect(Set(TreeSnapshot(applied).nodes.keys) == [".", "etc", "etc/opq", "etc/opq/new"])
    }

    @Test func sparseFilesStaySparse() throws {
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
        if let tar = which("tar") {
            let out = tmp.mkdir("gnutar")
            #expect(try run(tar, ["-xf", layer, "-C", out]).status == 0)
            #expect(TreeSnapshot.sha256(ofFile: out + "/sparse") == TreeSnapshot.sha256(ofFile: new + "/sparse"))
        }
    }

    @Test func gnuTarAndBsdtarReadTheLayerWithoutWarnings() throws {
        let tmp = TempDir()
        let old = tmp.mkdir("old")
        let new = tmp.mkdir("new")
        var gen = TreeGenerator(rng: SeededRandom(state: 3), root: new)
        for _ in 0..<80 { gen.addEntry() }
        let layer = tmp.sub("l.tar.gz")
        _ = try LayerDiffer().write(.trees(old: old, new: new), toFile: layer)
        for (tool, args) in [("tar", ["--xattrs", "--xattrs-include=*", "-xpzf"]), ("bsdtar", ["-xpf"])] {
            guard let path = which(tool) else { continue }
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
