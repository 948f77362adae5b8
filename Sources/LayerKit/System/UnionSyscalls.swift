import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// fd-relative syscalls on raw byte paths, for the union. None follows a symlink in the last
/// component; intermediate components are dirs the union resolved itself.
enum UnionSys {
    static let slash = UInt8(ascii: "/")
    static let dot: [UInt8] = [UInt8(ascii: ".")]

    /// `parent/name`; `name` when the parent is the root (`.`).
    static func join(_ parent: [UInt8], _ name: [UInt8]) -> [UInt8] {
        if parent == dot { return name }
        var p = parent
        p.reserveCapacity(parent.count + 1 + name.count)
        p.append(slash)
        p.append(contentsOf: name)
        return p
    }

    static func lstat(_ fd: Int32, _ path: [UInt8]) -> stat? {
        var st = stat()
        let rc = withCString(path) { fstatat(fd, $0, &st, AT_SYMLINK_NOFOLLOW) }
        return rc == 0 ? st : nil
    }

    @inline(__always) static func type(_ st: stat) -> mode_t { st.st_mode & mode_t(LK_S_IFMT) }
    @inline(__always) static func isDir(_ st: stat) -> Bool { type(st) == mode_t(LK_S_IFDIR) }
    @inline(__always) static func isReg(_ st: stat) -> Bool { type(st) == mode_t(LK_S_IFREG) }

    /// An overlay-format whiteout: a char device 0/0.
    @inline(__always) static func isWhiteoutDevice(_ st: stat) -> Bool {
        type(st) == mode_t(LK_S_IFCHR) && st.st_rdev == 0
    }

    static func exists(_ fd: Int32, _ path: [UInt8]) -> Bool {
        var st = stat()
        return withCString(path) { fstatat(fd, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
    }

    /// An absolute path for the *xattr calls, which have no fd-relative form in glibc.
    static func absolute(_ root: [UInt8], _ path: [UInt8]) -> [UInt8] {
        path == dot ? root : root + [slash] + path
    }

    /// One xattr value by absolute path, without following a final symlink; nil when absent.
    static func getXattr(_ absolutePath: [UInt8], _ name: String) -> [UInt8]? {
        withCString(absolutePath) { p -> [UInt8]? in
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let n = buffer.withUnsafeMutableBytes { lgetxattr(p, name, $0.baseAddress, $0.count) }
                if n >= 0 { return Array(buffer[..<n]) }
                if errno != ERANGE { return nil }
                let size = lgetxattr(p, name, nil, 0)
                if size < 0 { return nil }
                buffer = [UInt8](repeating: 0, count: size + 1)
            }
        }
    }

    /// xattr names of a path (without following a final symlink), or nil with errno set.
    static func listXattrs(_ absolutePath: [UInt8]) -> [String]? {
        withCString(absolutePath) { p -> [String]? in
            var size = llistxattr(p, nil, 0)
            if size < 0 { return errno == ENOTSUP ? [] : nil }
            while true {
                if size == 0 { return [] }
                var buffer = [CChar](repeating: 0, count: size)
                let n = llistxattr(p, &buffer, size)
                if n >= 0 {
                    return buffer[..<n].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
                }
                if errno != ERANGE { return nil }
                size = llistxattr(p, nil, 0)
                if size < 0 { return nil }
            }
        }
    }

    /// Names and `d_type`s of a directory (no `.`/`..`), read with getdents through readdir.
    static func listDirectory(_ fd: Int32, _ path: [UInt8]) -> [(name: [UInt8], type: UInt8)]? {
        let dirFD = withCString(path) { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard dirFD >= 0, let dir = fdopendir(dirFD) else {
            let saved = errno
            if dirFD >= 0 { close(dirFD) }
            errno = saved
            return nil
        }
        defer { closedir(dir) }
        var out: [(name: [UInt8], type: UInt8)] = []
        while let ent = readdir(dir) {
            let name: [UInt8] = withUnsafeBytes(of: &ent.pointee.d_name) { raw in
                let len = strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
                return Array(raw[..<len])
            }
            if name == dot || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            out.append((name, ent.pointee.d_type))
        }
        return out
    }
}

/// A pthread mutex with a condition (for waiting on a copy-up in progress): cheaper than NSLock
/// and usable from FUSE worker threads.
final class UnionMutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }
    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }
    /// Waits for `broadcast` (the mutex held before and after).
    func wait() { pthread_cond_wait(condition, mutex) }
    func broadcast() { pthread_cond_broadcast(condition) }
    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }
    @inline(__always) func locked<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
