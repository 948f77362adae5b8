import CLayerSys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A name that is a regular file in both trees (by the dirs' entry types): whether it changed is
/// decided off the walking thread.
struct PendingPair {
    /// The dir both files are in (one shared value per dir: cheap to keep, quick to compare).
    let dir: EntryPath
    let name: [UInt8]
    var path: EntryPath { dir.appending(name) }
}

/// What the comparer found for one pair.
enum PairOutcome: Equatable {
    /// Same metadata, xattrs and (where they had to be read) bytes.
    case same
    /// Something differs: the file joins the layer.
    case changed
    /// Not two regular files any more, or gone (the tree changes under the walk): the walk's slow
    /// path looks again.
    case recheck
    /// The bytes could not be read.
    case unreadable
}

/// What was found for one pair, with the new file's stat (for the hardlink groups and the layer's entry).
struct PairResult {
    var outcome: PairOutcome
    var st: stat
}

/// Decides, on a second thread while the walk goes on (the walking thread joins in once it is
/// done), whether each pair of regular files of two trees differs: stat, xattrs and, when the stat
/// cannot tell (same size and mtime, the mtime without a sub-second part, as tar-extracted files
/// have), the bytes. The walk itself only lists dirs.
///
/// Each thread picks per file how to look: where the last file's bytes had to be read, both files
/// are opened first and stat'ed through their fds (one lookup per name instead of two); where they
/// did not, both are stat'ed by name and opened only if needed. Files are opened by name in their
/// parent dir, opened beneath each root without symlinks, with `O_NOFOLLOW | O_NONBLOCK`, and the
/// fd's stat must show a regular file (and the same inode that was stat'ed), else the pair is
/// looked at again by the walk.
final class FilePairComparer: @unchecked Sendable {
    private let lock = NSCondition()
    private var items: [PendingPair] = []
    private var results: [PairResult] = []
    private var next = 0
    private var adding = true
    private var busy = 0
    private var workerDone = false
    let oldFD: Int32
    let newFD: Int32
    /// The trees' absolute paths, for the few xattrs that are read by path.
    let oldRootPath: [UInt8]
    let newRootPath: [UInt8]
    let xattrPolicy: XattrPolicy
    /// Read the bytes of every same-size pair, whatever the mtimes say.
    let compareContents: Bool

    init(oldFD: Int32, newFD: Int32, oldRootPath: [UInt8], newRootPath: [UInt8], xattrPolicy: XattrPolicy,
         compareContents: Bool) {
        self.oldFD = oldFD
        self.newFD = newFD
        self.oldRootPath = oldRootPath
        self.newRootPath = newRootPath
        self.xattrPolicy = xattrPolicy
        self.compareContents = compareContents
    }

    func add(_ item: PendingPair) {
        lock.lock()
        items.append(item)
        results.append(PairResult(outcome: .recheck, st: stat()))
        if items.count - next >= 32 { lock.signal() }
        lock.unlock()
    }

    func start() {
        let t = Thread { [self] in
            self.work()
            self.lock.lock()
            self.workerDone = true
            self.lock.broadcast()
            self.lock.unlock()
        }
        t.name = "layerkit-compare"
        t.start()
    }

    private func claim() -> (Int, [PendingPair])? {
        lock.lock()
        defer { lock.unlock() }
        while adding && items.count - next < 32 { lock.wait() }
        guard next < items.count else { return nil }
        let end = min(next + 64, items.count)
        var batch = [PendingPair]()   // a copy: a slice would keep `items` shared while the walk appends
        batch.reserveCapacity(end - next)
        for index in next..<end { batch.append(items[index]) }
        let start = next
        next = end
        busy += 1
        return (start, batch)
    }

    private func work() {
        var scratch = Scratch(oldRoot: oldFD, newRoot: newFD)
        defer { scratch.release() }
        while let (start, batch) = claim() {
            var found = [PairResult]()
            found.reserveCapacity(batch.count)
            for item in batch {
                let oldDir = scratch.oldDir.open(item.dir), newDir = scratch.newDir.open(item.dir)
                guard oldDir >= 0, newDir >= 0 else {
                    found.append(PairResult(outcome: .recheck, st: stat()))
                    continue
                }
                let (outcome, st) = decide(item, oldDir: oldDir, newDir: newDir, scratch: &scratch)
                found.append(PairResult(outcome: outcome, st: st))
            }
            lock.lock()
            for (i, v) in found.enumerated() { results[start + i] = v }
            busy -= 1
            lock.broadcast()
            lock.unlock()
        }
    }

    /// Ends the feeding, helps with what is left, and returns every pair with what was found.
    func finish() -> [(PendingPair, PairResult)] {
        lock.lock()
        adding = false
        lock.broadcast()
        lock.unlock()
        work()
        lock.lock()
        while busy > 0 || !workerDone { lock.wait() }
        let out = Array(zip(items, results))
        lock.unlock()
        return out
    }

    // MARK: One pair

    /// A thread's buffers, its parent dirs, and whether the last pair's bytes had to be read.
    private struct Scratch {
        let a = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64)
        let b = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64)
        var oldDir: OpenDirBelow
        var newDir: OpenDirBelow
        var expectContents = false

        init(oldRoot: Int32, newRoot: Int32) {
            oldDir = OpenDirBelow(rootFD: oldRoot)
            newDir = OpenDirBelow(rootFD: newRoot)
        }

        mutating func release() {
            a.deallocate()
            b.deallocate()
            oldDir.close()
            newDir.close()
        }
    }

    private func decide(_ item: PendingPair, oldDir: Int32, newDir: Int32, scratch: inout Scratch) -> (PairOutcome, stat) {
        let name = item.name
        var files = OpenPair()
        defer { files.close() }
        var ost = stat(), nst = stat()
        if scratch.expectContents {
            guard files.open(oldDir, newDir, name),
                  fstat(files.old, &ost) == 0, fstat(files.new, &nst) == 0 else { return (.recheck, nst) }
        } else {
            guard let o = FileSystem.lstat(oldDir, name), let n = FileSystem.lstat(newDir, name) else { return (.recheck, nst) }
            (ost, nst) = (o, n)
        }
        guard FileSystem.isRegularFile(ost), FileSystem.isRegularFile(nst) else { return (.recheck, nst) }
        if ost.st_mode & 0o7777 != nst.st_mode & 0o7777 || ost.st_uid != nst.st_uid || ost.st_gid != nst.st_gid
            || ost.st_mtim.tv_sec != nst.st_mtim.tv_sec || ost.st_mtim.tv_nsec != nst.st_mtim.tv_nsec
            || ost.st_size != nst.st_size || ost.st_nlink != nst.st_nlink {
            return (.changed, nst)
        }
        let readBytes = Self.onlyBytesCanTell(ost, nst, compareContents: compareContents)
        scratch.expectContents = readBytes
        if files.isOpen {
            if !sameXattrs(fd: files.old, fd: files.new) { return (.changed, nst) }
        } else {
            if !sameXattrs(item, oldDir: oldDir, newDir: newDir) { return (.changed, nst) }
        }
        guard readBytes else { return (.same, nst) }
        if !files.isOpen {
            var fo = stat(), fn = stat()
            guard files.open(oldDir, newDir, name), fstat(files.old, &fo) == 0, fstat(files.new, &fn) == 0,
                  FileSystem.sameInode(fo, ost), FileSystem.sameInode(fn, nst) else { return (.recheck, nst) }
        }
        switch Self.sameBytes(files.old, files.new, size: Int64(nst.st_size), buffers: (scratch.a, scratch.b)) {
        case 0: return (.same, nst)
        case 1: return (.changed, nst)
        default: return (.unreadable, nst)
        }
    }

    /// Whether two open files carry the same xattrs (most have none: one call each says so).
    private func sameXattrs(fd a: Int32, fd b: Int32) -> Bool {
        if Xattrs.hasNone(fd: a) && Xattrs.hasNone(fd: b) { return true }
        return Self.same(Xattrs.all(fd: a), Xattrs.all(fd: b), policy: xattrPolicy)
    }

    /// Whether both files carry the same xattrs, read by name in their parent dirs.
    private func sameXattrs(_ item: PendingPair, oldDir: Int32, newDir: Int32) -> Bool {
        let name = item.name
        return Self.same(Xattrs.all(oldDir, name, absolute: ChangeSet.absolute(oldRootPath, item.path)),
                         Xattrs.all(newDir, name, absolute: ChangeSet.absolute(newRootPath, item.path)), policy: xattrPolicy)
    }

    private static func same(_ a: [Xattrs.Attribute], _ b: [Xattrs.Attribute], policy: XattrPolicy) -> Bool {
        let xa = a.filter { policy.carries($0.name) }, xb = b.filter { policy.carries($0.name) }
        if xa.count != xb.count { return false }
        for (x, y) in zip(xa, xb) where x.name != y.name || x.value != y.value { return false }
        return true
    }

    /// Whether two regular files with the same stat must be read to tell whether they differ:
    /// the mtime has no sub-second part (tar-extracted trees) or reading was asked for, and they
    /// are not one inode.
    static func onlyBytesCanTell(_ a: stat, _ b: stat, compareContents: Bool) -> Bool {
        guard FileSystem.isRegularFile(a), a.st_size > 0 else { return false }
        guard compareContents || b.st_mtim.tv_nsec == 0 else { return false }
        return !FileSystem.sameInode(a, b)
    }

    /// 0 when both open files hold the same `size` bytes, 1 when not, -1 on a read error. Reads
    /// exactly the known size (one read per small file, no read for the end).
    static func sameBytes(_ fa: Int32, _ fb: Int32, size: Int64,
                          buffers: (UnsafeMutableRawPointer, UnsafeMutableRawPointer)) -> Int8 {
        var offset: Int64 = 0
        while offset < size {
            let want = Int(min(Int64(1 << 16), size - offset))
            let na = pread(fa, buffers.0, want, off_t(offset))
            let nb = pread(fb, buffers.1, want, off_t(offset))
            if na < 0 || nb < 0 { return -1 }
            if na != nb || na == 0 { return 1 }
            if memcmp(buffers.0, buffers.1, na) != 0 { return 1 }
            offset += Int64(na)
        }
        return 0
    }
}

/// The two files of a pair, opened for reading by name in their parent dirs: nothing but that
/// name (no symlink), never blocking (a fifo put there meanwhile), never becoming a terminal.
struct OpenPair {
    private(set) var old: Int32 = -1
    private(set) var new: Int32 = -1
    var isOpen: Bool { old >= 0 && new >= 0 }

    mutating func open(_ oldDir: Int32, _ newDir: Int32, _ name: [UInt8]) -> Bool {
        old = Self.openFile(oldDir, name)
        guard old >= 0 else { return false }
        new = Self.openFile(newDir, name)
        return new >= 0
    }

    mutating func close() {
        if old >= 0 { Glibc.close(old) }
        if new >= 0 { Glibc.close(new) }
        (old, new) = (-1, -1)
    }

    /// `name` is one component from the dir's own listing (never `.`, `..` or with a slash), so
    /// `openat` with `O_NOFOLLOW` opens exactly that entry.
    static func openFile(_ dir: Int32, _ name: [UInt8]) -> Int32 {
        let noAtime: Int32 = 0o1000000   // O_NOATIME (not imported: it needs _GNU_SOURCE)
        let flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
        return withCString(name) { (cName) -> Int32 in
            var fd = openat(dir, cName, flags | noAtime)
            if fd < 0 && errno == EPERM { fd = openat(dir, cName, flags) }
            return fd
        }
    }
}

/// A dir below a root, opened beneath it without symlinks and kept open while the next file
/// asks for the same one: the walk hands files over dir by dir. The root itself is never closed.
struct OpenDirBelow {
    let rootFD: Int32
    private var path = EntryPath.root
    private var fd: Int32 = -1

    init(rootFD: Int32) { self.rootFD = rootFD }

    /// The dir at `dir` (the root for the root), or -1 with `errno` set.
    mutating func open(_ dir: EntryPath) -> Int32 {
        if dir.isRoot { return rootFD }
        if fd >= 0 && path == dir { return fd }
        close()
        fd = FileSystem.openBeneath(rootFD, dir.bytes)
        path = dir
        return fd
    }

    mutating func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
