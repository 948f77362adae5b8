import CLayerSys
import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The union core on its own (no FUSE, no mount): path operations on a TempDir with lowers and an
// upper, in both whiteout forms, checked through the union's API and in the upper dir it writes.

private let forms: [UnionWhiteoutForm] = isRoot ? [.overlay(.trusted), .aufs] : [.aufs]

extension UnionWhiteoutForm: CustomTestStringConvertible {
    public var testDescription: String {
        switch self {
        case .overlay(let ns): return "overlay form (\(ns.rawValue).overlay.*)"
        case .aufs: return "aufs form (.wh.*)"
        }
    }
}

private struct CoreFixture {
    let tmp: TempDir
    let lowers: [String]
    let upper: String
    let work: String
    let union: UnionFileSystem

    init(_ form: UnionWhiteoutForm, lowers scripts: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let layout = try UnionMounts.Layout("core", lowers: scripts, sourceLocation: sourceLocation)
        (tmp, lowers, upper, work) = (layout.tmp, layout.lowers, layout.upper, layout.work)
        union = try UnionFileSystem(lowers: lowers, upper: upper, work: work, options: .init(whiteoutForm: form))
    }

    func ino(_ path: String) throws(UnionError) -> UInt64 { try union.inode(ofPath: path) }

    func names(_ path: String) throws -> [String] {
        try union.readDirectory(try ino(path)).map { String(decoding: $0.name, as: UTF8.self) }.sorted()
    }

    func read(_ path: String) throws -> String {
        let fd = try union.open(try ino(path), flags: O_RDONLY)
        defer { close(fd) }
        var out = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            out += buffer[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    func append(_ path: String, _ text: String) throws {
        let fd = try union.open(try ino(path), flags: O_WRONLY | O_APPEND)
        defer { close(fd) }
        _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    func parentAndName(_ path: String) throws -> (UInt64, [UInt8]) {
        let (dir, base) = path.contains("/") ? (String(path[..<path.lastIndex(of: "/")!]), String(path[path.index(after: path.lastIndex(of: "/")!)...])) : ("", path)
        return (try ino(dir), Array(base.utf8))
    }

    /// The errno an operation fails with (0 when it succeeds, -1 for another kind of error).
    func errno(_ body: () throws -> Void) -> Int32 {
        do { try body(); return 0 } catch { return (error as? UnionError)?.errno ?? -1 }
    }

    /// Whether the upper holds a whiteout for `path` in the fixture's form.
    func upperHasWhiteout(_ path: String, form: UnionWhiteoutForm) -> Bool {
        switch form {
        case .overlay:
            var st = stat()
            return lstat(upper + "/" + path, &st) == 0 && st.st_mode & 0o170000 == 0o020000 && st.st_rdev == 0
        case .aufs:
            let (dir, base) = FSPath.split(path)
            return access(upper + "/" + (dir.isEmpty ? "" : dir + "/") + ".wh." + base, F_OK) == 0
        }
    }

    func upperIsOpaque(_ path: String, form: UnionWhiteoutForm) -> Bool {
        switch form {
        case .overlay(let ns):
            var v = [UInt8](repeating: 0, count: 4)
            return lgetxattr(upper + "/" + path, "\(ns.rawValue).overlay.opaque", &v, 4) == 1 && v[0] == UInt8(ascii: "y")
        case .aufs:
            return access(upper + "/" + path + "/.wh..wh..opq", F_OK) == 0
        }
    }
}

private enum FSPath {
    static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }
}

@Suite struct UnionCoreTests {
    @Test(arguments: forms)
    func lookupGoesThroughTheLayersAndReaddirMerges(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["echo top > a; mkdir d; echo 1 > d/x; mknod d/gone c 0 0 2>/dev/null || true",
                                               "echo bottom > a; echo b > b; mkdir d; echo 2 > d/y; echo g > d/gone"])
        #expect(try f.read("a") == "top\n")
        #expect(try f.read("b") == "b\n")
        #expect(try f.read("d/y") == "2\n")
        #expect(try f.names("") == ["a", "b", "d"])
        let expectGone = isRoot  // the 0/0 device in the top lower could be made
        #expect(try f.names("d") == (expectGone ? ["x", "y"] : ["gone", "x", "y"]))
        #expect(f.errno { _ = try f.union.inode(ofPath: "nope") } == ENOENT)
        #expect(f.errno { _ = try f.union.inode(ofPath: "a/b") } == ENOTDIR)
        // Reading copies nothing up.
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.upper).isEmpty)
    }

    @Test(arguments: forms)
    func firstWriteCopiesUpContentMetadataAndXattrsKeepingTheInode(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["""
            mkdir -m 750 dir; echo data > dir/f; chmod 640 dir/f; setfattr -n user.k -v v dir/f; touch -d @1000000000 dir/f
            truncate -s 32M dir/sparse; printf end >> dir/sparse
            """ + (isRoot ? "; chown 7:8 dir; chown 1234:5678 dir/f" : "")])
        let before = try f.ino("dir/f")
        let lowerStat = try #require(lstatOrNil(f.lowers[0] + "/dir/f"))
        try f.append("dir/f", "more\n")
        #expect(try f.ino("dir/f") == before)
        #expect(try f.union.attributes(before).st_ino == ino_t(before))
        #expect(try f.read("dir/f") == "data\nmore\n")
        let up = try #require(lstatOrNil(f.upper + "/dir/f"))
        #expect(up.st_mode & 0o7777 == 0o640)
        #expect(up.st_uid == lowerStat.st_uid && up.st_gid == lowerStat.st_gid)
        let dirUp = try #require(lstatOrNil(f.upper + "/dir"))
        #expect(dirUp.st_mode & 0o7777 == 0o750)
        if isRoot { #expect(dirUp.st_uid == 7 && dirUp.st_gid == 8) }
        var v = [UInt8](repeating: 0, count: 8)
        #expect(lgetxattr(f.upper + "/dir/f", "user.k", &v, 8) == 1 && v[0] == UInt8(ascii: "v"))
        #expect(String(decoding: try f.union.getXattr(before, name: "user.k"), as: UTF8.self) == "v")
        // The lower is untouched.
        #expect(try String(contentsOfFile: f.lowers[0] + "/dir/f", encoding: .utf8) == "data\n")
        // Holes survive a copy-up caused by a metadata change.
        let sparse = try f.ino("dir/sparse")
        _ = try f.union.setAttributes(sparse, UnionAttributeChange(mode: 0o600))
        let sp = try #require(lstatOrNil(f.upper + "/dir/sparse"))
        #expect(sp.st_size == 32 * 1024 * 1024 + 3)
        #expect(sp.st_blocks < 1024, "copy-up filled the holes: \(sp.st_blocks) blocks")
        #expect(sp.st_mode & 0o7777 == 0o600)
        // Nothing is left in the work dir.
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.work).isEmpty)
    }

    @Test(arguments: forms)
    func unlinkAndRmdirLeaveWhiteoutsAndMkdirOverOneIsOpaque(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["echo a > a; mkdir d; echo x > d/x; mkdir e; echo > upperonly-later"])
        let (root, _) = try f.parentAndName("a")
        try f.union.unlink(parent: root, name: Array("a".utf8))
        #expect(f.upperHasWhiteout("a", form: form))
        #expect(f.errno { try f.union.removeDirectory(parent: root, name: Array("d".utf8)) } == ENOTEMPTY)
        try f.union.unlink(parent: try f.ino("d"), name: Array("x".utf8))
        try f.union.removeDirectory(parent: root, name: Array("d".utf8))
        #expect(f.upperHasWhiteout("d", form: form))
        #expect(try f.names("") == ["e", "upperonly-later"])
        _ = try f.union.makeDirectory(parent: root, name: Array("d".utf8), mode: 0o755, caller: .current)
        #expect(f.upperIsOpaque("d", form: form))
        #expect(try f.names("d") == [])
        #expect(!f.upperHasWhiteout("d", form: form))
        // A new file in the upper only: removing it leaves nothing behind.
        let (st, fd) = try f.union.create(parent: root, name: Array("new".utf8), mode: 0o644, flags: O_WRONLY, caller: .current)
        close(fd)
        #expect(st.st_mode & 0o170000 == 0o100000)
        try f.union.unlink(parent: root, name: Array("new".utf8))
        #expect(lstatOrNil(f.upper + "/new") == nil && !f.upperHasWhiteout("new", form: form))
        // Markers are never listed; their names are refused in the aufs form.
        #expect(try f.names("") == ["d", "e", "upperonly-later"])
        if form == .aufs {
            #expect(f.errno { _ = try f.union.makeDirectory(parent: root, name: Array(".wh.x".utf8), mode: 0o755, caller: .current) } == EINVAL)
        }
    }

    @Test(arguments: forms)
    func renames(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["echo f > f; mkdir d; echo x > d/x; mkdir empty"])
        let root = try f.ino("")
        let fileIno = try f.ino("f")
        try f.union.rename(parent: root, name: Array("f".utf8), newParent: root, newName: Array("g".utf8))
        #expect(try f.ino("g") == fileIno)
        #expect(try f.read("g") == "f\n")
        #expect(f.upperHasWhiteout("f", form: form))
        #expect(f.errno { try f.union.rename(parent: root, name: Array("d".utf8), newParent: root, newName: Array("d2".utf8)) } == EXDEV)
        #expect(f.errno { try f.union.rename(parent: root, name: Array("empty".utf8), newParent: root, newName: Array("e2".utf8)) } == EXDEV)
        _ = try f.union.makeDirectory(parent: root, name: Array("n".utf8), mode: 0o755, caller: .current)
        try f.union.rename(parent: root, name: Array("n".utf8), newParent: root, newName: Array("n2".utf8))
        #expect(lstatOrNil(f.upper + "/n") == nil && !f.upperHasWhiteout("n", form: form))
        // An upper-only dir moved over an empty lower dir hides it (opaque).
        try f.union.rename(parent: root, name: Array("n2".utf8), newParent: root, newName: Array("empty".utf8))
        #expect(f.upperIsOpaque("empty", form: form))
        #expect(f.errno { try f.union.rename(parent: root, name: Array("g".utf8), newParent: root, newName: Array("empty".utf8), flags: 1) } == EEXIST)
        #expect(f.errno { try f.union.rename(parent: root, name: Array("g".utf8), newParent: root, newName: Array("empty".utf8)) } == EISDIR)
        #expect(try f.names("") == ["d", "empty", "g"])
    }

    @Test(arguments: forms)
    func hardlinksCopyUpOnceAndShareAnInode(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["echo one > a"])
        let root = try f.ino("")
        let a = try f.ino("a")
        let st = try f.union.link(a, newParent: root, newName: Array("b".utf8))
        #expect(st.st_ino == ino_t(a) && st.st_nlink == 2)
        #expect(try f.ino("b") == a)
        let up = try #require(lstatOrNil(f.upper + "/a")), ub = try #require(lstatOrNil(f.upper + "/b"))
        #expect(up.st_ino == ub.st_ino)
        try f.union.unlink(parent: root, name: Array("a".utf8))
        #expect(try f.read("b") == "one\n")
        #expect(try f.union.attributes(a).st_nlink == 1)
    }

    @Test(arguments: forms)
    func overlayXattrsAreHiddenAndRefused(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["mkdir d; setfattr -n user.overlay.opaque -v y d; setfattr -n user.mine -v 1 d; echo > f"])
        let d = try f.ino("d")
        #expect(try f.union.listXattrs(d) == ["user.mine"])
        #expect(f.errno { _ = try f.union.getXattr(d, name: "user.overlay.opaque") } == ENODATA)
        let file = try f.ino("f")
        #expect(f.errno { try f.union.setXattr(file, name: "trusted.overlay.opaque", value: [UInt8(ascii: "y")], flags: 0) } == EPERM)
        #expect(f.errno { try f.union.setXattr(file, name: "user.overlay.redirect", value: [UInt8(ascii: "x")], flags: 0) } == EPERM)
        // A refused change copies nothing up.
        #expect(lstatOrNil(f.upper + "/f") == nil)
        try f.union.setXattr(file, name: "user.ok", value: Array("1".utf8), flags: 0)
        #expect(lstatOrNil(f.upper + "/f") != nil)
        #expect(f.errno { _ = try f.union.makeNode(parent: try f.ino(""), name: Array("wh".utf8), mode: 0o020644, device: 0, caller: .current) } == EPERM)
    }

    @Test func aCrashedCopyUpLeavesNothingVisibleAndIsCleanedOnOpen() throws {
        let tmp = TempDir("union-crash")
        let lower = tmp.mkdir("lower"), upper = tmp.mkdir("upper"), work = tmp.mkdir("work")
        try "x".write(toFile: lower + "/f", atomically: false, encoding: .utf8)
        // What a copy-up killed half way leaves: a partial temp file in the work dir only.
        try "partial".write(toFile: work + "/#layerkit-union-7", atomically: false, encoding: .utf8)
        let union = try UnionFileSystem(lowers: [lower], upper: upper, work: work, options: .init(whiteoutForm: .aufs))
        #expect(try FileManager.default.contentsOfDirectory(atPath: work).isEmpty)
        #expect(try union.readDirectory(UnionFileSystem.rootInode).map(\.name) == [Array("f".utf8)])
    }

    @Test func aWorkDirOnAnotherFileSystemIsRefused() throws {
        let tmp = TempDir("union-xdev")
        let upper = tmp.mkdir("upper"), lower = tmp.mkdir("lower")
        var a = stat(), b = stat()
        stat(upper, &a)
        stat("/dev/shm", &b)
        try #require(a.st_dev != b.st_dev, "needs /dev/shm on another file system than \(upper)")
        #expect(throws: UnionError.self) {
            _ = try UnionFileSystem(lowers: [lower], upper: upper, work: "/dev/shm")
        }
    }

    /// The diff engine reads the union's upper dir in both forms: `diff --upper` applied onto the
    /// lower gives the same tree as the same changes made to a plain copy of the lower.
    @Test(arguments: forms)
    func theDiffEngineReadsTheUpper(_ form: UnionWhiteoutForm) throws {
        let lowerScript = "echo a > a; echo b > b; mkdir d; echo x > d/x; echo y > d/y; mkdir e; echo z > e/z; ln -s a s; echo h > h"
        let f = try CoreFixture(form, lowers: [lowerScript])
        let root = try f.ino("")
        try f.append("a", "more\n")
        try f.union.unlink(parent: root, name: Array("b".utf8))
        try f.union.unlink(parent: try f.ino("d"), name: Array("x".utf8))
        try f.union.unlink(parent: try f.ino("e"), name: Array("z".utf8))
        try f.union.removeDirectory(parent: root, name: Array("e".utf8))
        _ = try f.union.makeDirectory(parent: root, name: Array("e".utf8), mode: 0o700, caller: .current)
        _ = try f.union.makeSymlink(parent: try f.ino("e"), name: Array("t".utf8), target: Array("../a".utf8), caller: .current)
        try f.union.rename(parent: root, name: Array("h".utf8), newParent: try f.ino("d"), newName: Array("h2".utf8))
        _ = try f.union.link(try f.ino("a"), newParent: try f.ino("d"), newName: Array("a-link".utf8))

        let expected = f.tmp.sub("expected")
        try copyTree(f.lowers[0], expected)
        try UnionMounts.build(expected, "echo more >> a; rm b d/x; rm -r e; mkdir -m 700 e; ln -s ../a e/t; mv h d/h2; ln a d/a-link")

        let layer = f.tmp.sub("upper.tar")
        _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(f.upper), toFile: layer)
        let applied = f.tmp.sub("applied")
        try copyTree(f.lowers[0], applied)
        _ = try LayerApplier().apply(.path(layer), to: applied)
        var options = TreeSnapshot.Options()
        options.mtimes = false
        let diff = TreeSnapshot(expected, options: options).differences(from: TreeSnapshot(applied, options: options))
        #expect(diff.isEmpty, "LOWER + diff --upper differs from the expected tree:\n\(diff.joined(separator: "\n"))")
    }
}

/// Per-thread outcomes (an errno, 0 for success) of a concurrent test.
private final class ErrnoSlots: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Int32]
    init(_ count: Int) { slots = Array(repeating: -2, count: count) }
    subscript(i: Int) -> Int32 {
        get { lock.lock(); defer { lock.unlock() }; return slots[i] }
        set { lock.lock(); slots[i] = newValue; lock.unlock() }
    }
    var values: [Int32] { lock.lock(); defer { lock.unlock() }; return slots }
}

extension UnionCoreTests {
    /// A file's content is copied with the union's lock released: concurrent openers of the same
    /// file wait for the one copy, other operations go on, and a file removed during its copy-up
    /// stays removed with nothing left in the work dir.
    @Test(arguments: forms)
    func concurrentCopyUpsOfOneFileMakeOneCopyAndOthersGoOn(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["head -c 67108864 /dev/urandom > big; echo s > small; mkdir d; echo x > d/x; cp big doomed"])
        let big = try f.ino("big")
        let expected = try #require(FileManager.default.contents(atPath: f.lowers[0] + "/big"))
        let union = f.union
        let results = ErrnoSlots(6)
        let bigIno = big
        DispatchQueue.concurrentPerform(iterations: 6) { i in
            switch i {
            case 0, 1, 2:
                // Three writers of the same lower file.
                do { let fd = try union.open(bigIno, flags: O_RDWR); close(fd); results[i] = 0 } catch { results[i] = (error as? UnionError)?.errno ?? -1 }
            case 3:
                // Meanwhile: lookups and listings elsewhere.
                do {
                    for _ in 0..<50 { _ = try union.readDirectory(try union.inode(ofPath: "d")); _ = try union.attributes(try union.inode(ofPath: "small")) }
                    results[i] = 0
                } catch { results[i] = (error as? UnionError)?.errno ?? -1 }
            case 4:
                // A copy-up raced by an unlink of the same file.
                do { let fd = try union.open(try union.inode(ofPath: "doomed"), flags: O_WRONLY); close(fd); results[i] = 0 } catch { results[i] = (error as? UnionError)?.errno ?? -1 }
            default:
                do { try union.unlink(parent: UnionFileSystem.rootInode, name: Array("doomed".utf8)); results[i] = 0 } catch { results[i] = (error as? UnionError)?.errno ?? -1 }
            }
        }
        #expect(Array(results.values[0..<4]) == [0, 0, 0, 0])
        #expect(results.values[4] == 0 || results.values[4] == ENOENT, "open during unlink: errno \(results.values[4])")
        #expect(results.values[5] == 0)
        #expect(FileManager.default.contents(atPath: f.upper + "/big") == expected)
        #expect(try f.names("") == ["big", "d", "small"])
        #expect(f.upperHasWhiteout("doomed", form: form))
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.work).isEmpty)
    }
}

extension UnionCoreTests {
    /// The fds of this process that refer to `path` (readlink of /proc/self/fd/N), which the
    /// kernel shows with " (deleted)" once its name is gone.
    private func fdsOpen(on path: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) == path }.count
    }

    /// An entry the kernel still holds (an open fd) outlives its last name, as on overlayfs: an
    /// upper file stays readable and changeable through its inode number, a lower one readable
    /// (changes other than the times refused, as overlayfs refuses their copy-up); nothing of
    /// either is left in the upper or the work dir, and the union lets go of the backing file
    /// when the kernel forgets the inode.
    @Test(arguments: forms)
    func anEntryTheKernelHoldsOutlivesItsLastNameUntilForgotten(_ form: UnionWhiteoutForm) throws {
        let f = try CoreFixture(form, lowers: ["echo lower > low"])
        let root = UnionFileSystem.rootInode
        let (created, fd) = try f.union.create(parent: root, name: Array("tmp".utf8), mode: 0o644, flags: O_RDWR, caller: .current)
        _ = "hello".withCString { write(fd, $0, 5) }
        close(fd)
        let tmp = UInt64(created.st_ino)
        try f.union.unlink(parent: root, name: Array("tmp".utf8))

        #expect(try f.union.attributes(tmp).st_nlink == 0)
        let changed = try f.union.setAttributes(tmp, UnionAttributeChange(mode: 0o600, size: 2, modificationTime: timespec(tv_sec: 1_000_000_000, tv_nsec: 0)))
        #expect(changed.st_size == 2 && changed.st_mode & 0o7777 == 0o600 && changed.st_mtim.tv_sec == 1_000_000_000 && changed.st_ino == tmp)
        let again = try f.union.open(tmp, flags: O_RDWR)
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(pread(again, &buffer, 16, 0) == 2 && buffer[0..<2] == [UInt8(ascii: "h"), UInt8(ascii: "e")])
        close(again)
        #expect(!FileManager.default.fileExists(atPath: f.upper + "/tmp"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.work).isEmpty)
        let deleted = URL(fileURLWithPath: f.upper).resolvingSymlinksInPath().path + "/tmp (deleted)"
        #expect(fdsOpen(on: deleted) == 1, "the union holds the unlinked file by one fd")
        f.union.forget(tmp, count: 1)
        #expect(f.errno { _ = try f.union.attributes(tmp) } == ESTALE)
        #expect(fdsOpen(on: deleted) == 0, "forgotten, the unlinked file is let go")

        let low = UInt64(try f.union.lookup(parent: root, name: Array("low".utf8)).st_ino)
        try f.union.unlink(parent: root, name: Array("low".utf8))
        #expect(try f.union.attributes(low).st_size == 6)
        let reader = try f.union.open(low, flags: O_RDONLY)
        #expect(pread(reader, &buffer, 16, 0) == 6 && buffer[0..<6] == Array("lower\n".utf8)[...])
        close(reader)
        #expect(f.errno { _ = try f.union.setAttributes(low, UnionAttributeChange(mode: 0o600)) } == EEXIST)
        #expect(f.errno { _ = try f.union.open(low, flags: O_RDWR) } == EEXIST)
        #expect(f.errno { try f.union.setXattr(low, name: "user.k", value: [1], flags: 0) } == EEXIST)
        #expect(f.errno { _ = try f.union.setAttributes(low, UnionAttributeChange(modificationTime: timespec(tv_sec: 5, tv_nsec: 0))) } == 0)
        #expect(try f.union.attributes(low).st_mode & 0o7777 == 0o644)
        #expect(f.upperHasWhiteout("low", form: form))
        f.union.forget(low, count: 1)
        #expect(f.errno { _ = try f.union.attributes(low) } == ESTALE)
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.work).isEmpty)
    }
}
