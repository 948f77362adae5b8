import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An advisory `flock(2)` lock on a file, held through this object's open file description.
///
/// The kernel drops it when the descriptor closes, so a process killed while holding it leaves
/// nothing behind. Two `FileLock`s on the same path conflict even within one process.
final class FileLock {
    enum Mode: Sendable { case shared, exclusive }

    let path: String
    private let fd: Int32

    /// Opens (creating if needed) the lock file; takes no lock yet.
    init(path: String) throws(StoreError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot open lock file") }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Waits for the lock. Converting a held lock is not atomic (flock drops it first).
    func lock(_ mode: Mode) throws(StoreError) {
        let op = mode == .shared ? LOCK_SH : LOCK_EX
        while flock(fd, op) != 0 {
            if errno == EINTR { continue }
            throw .lastErrno(path: path, "cannot lock")
        }
    }

    /// Takes the lock if no one else holds a conflicting one; false if someone does.
    func tryLock(_ mode: Mode) throws(StoreError) -> Bool {
        let op = (mode == .shared ? LOCK_SH : LOCK_EX) | LOCK_NB
        while flock(fd, op) != 0 {
            if errno == EINTR { continue }
            if errno == EWOULDBLOCK { return false }
            throw .lastErrno(path: path, "cannot lock")
        }
        return true
    }

    func unlock() { _ = flock(fd, LOCK_UN) }
}
