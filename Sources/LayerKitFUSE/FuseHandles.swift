import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// An open file: the backing fd, read and written without the union's lock. A read-only handle
/// opened while the file was still in a lower layer moves to the upper copy once the file is
/// copied up (as overlayfs does since Linux 4.19), so it never reads stale bytes.
final class FuseFileHandle: @unchecked Sendable {
    private var currentFD: Int32
    private var onLower: Bool
    private var retired: [Int32] = []
    private let lock = HandleMutex()

    init(fd: Int32, inUpper: Bool = true) {
        self.currentFD = fd
        self.onLower = !inUpper
    }

    deinit {
        close(currentFD)
        for old in retired { close(old) }
    }

    /// The backing fd (for writes, fsync, ftruncate: handles open for writing are on the upper).
    var fd: Int32 {
        lock.lock()
        defer { lock.unlock() }
        return currentFD
    }

    /// The fd to read through: the upper copy's once `ino` has been copied up.
    func readFD(_ union: UnionFileSystem, _ ino: UInt64) -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        guard onLower, union.isInUpper(ino) else { return currentFD }
        if let upperFD = try? union.open(ino, flags: O_RDONLY) {
            retired.append(currentFD)   // closed with the handle: a read in flight may still use it
            currentFD = upperFD
            onLower = false
        }
        return currentFD
    }

    /// The handle as FUSE's 64-bit `fh` (retained until `take`).
    func retainedFH() -> UInt64 { UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque())) }
    static func borrow(_ fh: UInt64) -> FuseFileHandle {
        Unmanaged<FuseFileHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeUnretainedValue()
    }
    static func take(_ fh: UInt64) -> FuseFileHandle {
        Unmanaged<FuseFileHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeRetainedValue()
    }
}

/// A pthread mutex (Foundation stays out of this target).
final class HandleMutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit { pthread_mutex_destroy(mutex); mutex.deallocate() }
    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
}

/// An open dir: its merged listing, taken at opendir (readdir offsets index into it).
final class FuseDirectoryHandle {
    let ino: UInt64
    var entries: [UnionDirectoryEntry]
    init(ino: UInt64, entries: [UnionDirectoryEntry]) {
        self.ino = ino
        self.entries = entries
    }

    func retainedFH() -> UInt64 { UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque())) }
    static func borrow(_ fh: UInt64) -> FuseDirectoryHandle {
        Unmanaged<FuseDirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeUnretainedValue()
    }
    static func take(_ fh: UInt64) -> FuseDirectoryHandle {
        Unmanaged<FuseDirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeRetainedValue()
    }
}
