import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Thin wrappers over the file system calls the engines use, on raw byte names relative to
/// directory fds. None follows a symlink in the last component. Failures come back as `Errno`
/// (or nil with `errno` set, where the caller decides what a failure means).
enum FileSystem {
    static let slash = UInt8(ascii: "/")
    /// `.`: the root of a tree, as a relative path.
    static let dot: [UInt8] = [UInt8(ascii: ".")]
    static let dotDot: [UInt8] = [UInt8(ascii: "."), UInt8(ascii: ".")]

    // MARK: Metadata

    /// `fstatat(AT_SYMLINK_NOFOLLOW)`; nil with `errno` set when it fails.
    static func lstat<Name: Collection>(_ dirFD: Int32, _ name: Name) -> stat? where Name.Element == UInt8 {
        var st = stat()
        let rc = withCString(name) { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
        return rc == 0 ? st : nil
    }

    /// `fstat`; nil with `errno` set when it fails.
    static func attributes(of fd: Int32) -> stat? {
        var st = stat()
        return fstat(fd, &st) == 0 ? st : nil
    }

    static func exists<Name: Collection>(_ dirFD: Int32, _ name: Name) -> Bool where Name.Element == UInt8 {
        lstat(dirFD, name) != nil
    }

    @inline(__always) static func fileType(_ st: stat) -> mode_t { st.st_mode & mode_t(LK_S_IFMT) }
    @inline(__always) static func isDirectory(_ st: stat) -> Bool { fileType(st) == mode_t(LK_S_IFDIR) }
    @inline(__always) static func isRegularFile(_ st: stat) -> Bool { fileType(st) == mode_t(LK_S_IFREG) }
    @inline(__always) static func isSymlink(_ st: stat) -> Bool { fileType(st) == mode_t(LK_S_IFLNK) }

    /// Whether two stats are of the same inode.
    @inline(__always) static func sameInode(_ a: stat, _ b: stat) -> Bool { a.st_dev == b.st_dev && a.st_ino == b.st_ino }

    /// The target of a symlink.
    static func readLink<Name: Collection>(_ dirFD: Int32, _ name: Name) throws(Errno) -> [UInt8] where Name.Element == UInt8 {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = withCString(name) { p in buffer.withUnsafeMutableBytes { readlinkat(dirFD, p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) } }
        guard n >= 0 else { throw Errno(rawValue: errno) }
        return Array(buffer[..<n])
    }

    // MARK: Directories

    /// One name in a directory listing, with its `d_type`.
    struct DirectoryEntry {
        var name: [UInt8]
        var type: UInt8
    }

    /// The entries of an open directory, without `.` and `..`, in the order the file system gives.
    static func entries(of fd: Int32) throws(Errno) -> [DirectoryEntry] {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else {
            let e = Errno(rawValue: errno)
            if copy >= 0 { close(copy) }
            throw e
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var out = [DirectoryEntry]()
        errno = 0
        while let ent = readdir(dir) {
            let name: [UInt8] = withUnsafeBytes(of: &ent.pointee.d_name) { raw in
                let len = strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
                return Array(raw[..<len])
            }
            if name != dot && name != dotDot { out.append(DirectoryEntry(name: name, type: ent.pointee.d_type)) }
        }
        if errno != 0 { throw Errno(rawValue: errno) }
        return out
    }

    /// The entries of the directory at `path` below `dirFD` (the last component not followed).
    static func entries(_ dirFD: Int32, _ path: [UInt8]) throws(Errno) -> [DirectoryEntry] {
        let fd = try openDirectory(dirFD, path)
        defer { close(fd) }
        return try entries(of: fd)
    }

    /// The names in an open directory, without `.` and `..`.
    static func names(of fd: Int32) throws(Errno) -> [[UInt8]] {
        try entries(of: fd).map(\.name)
    }

    /// The names in an open directory, sorted bytewise (the order layers are written in).
    static func sortedNames(of fd: Int32) throws(Errno) -> [[UInt8]] {
        try names(of: fd).sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// The bytes of a small regular file at `path`: nil when it is missing, a symlink, not a
    /// regular file, larger than `limit`, or unreadable. Never reads more than `limit` bytes (a
    /// file in a store dir someone else may have written).
    static func readSmallRegularFile(atPath path: String, limit: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let st = attributes(of: fd), isRegularFile(st), st.st_size >= 0, Int(st.st_size) <= limit else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return nil }
            if n == 0 { break }
            done += n
        }
        return Array(bytes[..<done])
    }

    /// The entries of an open directory, sorted bytewise by name.
    static func sortedEntries(of fd: Int32) throws(Errno) -> [DirectoryEntry] {
        try entries(of: fd).sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// Opens the directory `name` below `dirFD` without following a symlink at `name` (a path
    /// whose earlier components the caller resolved itself).
    static func openDirectory<Name: Collection>(_ dirFD: Int32, _ name: Name) throws(Errno) -> Int32 where Name.Element == UInt8 {
        let fd = withCString(name) { openat(dirFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        return fd
    }

    /// Opens a directory by absolute or cwd-relative path (following symlinks: a path a person gave).
    static func openDirectory(atPath path: String) throws(Errno) -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        return fd
    }

    // MARK: Confined resolution

    /// `openat2(RESOLVE_IN_ROOT)`: `path` resolved as if `rootFD` were `/` (`..`, absolute names and
    /// symlinks cannot leave it). Returns the fd, or -1 with `errno` set.
    static func openInRoot<Path: Collection>(_ rootFD: Int32, _ path: Path, flags: Int32 = O_RDONLY | O_DIRECTORY,
                                             mode: mode_t = 0) -> Int32 where Path.Element == UInt8 {
        withCString(path.isEmpty ? dot : Array(path)) {
            lk_openat2(rootFD, $0, UInt64(flags | O_CLOEXEC), UInt64(mode), UInt64(LK_RESOLVE_IN_ROOT | LK_RESOLVE_NO_MAGICLINKS))
        }
    }

    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: `path` below `rootFD` through real
    /// directories only. Returns the fd, or -1 with `errno` set.
    static func openBeneath<Path: Collection>(_ rootFD: Int32, _ path: Path, flags: Int32 = O_RDONLY | O_DIRECTORY) -> Int32 where Path.Element == UInt8 {
        withCString(path.isEmpty ? dot : Array(path)) {
            lk_openat2(rootFD, $0, UInt64(flags | O_CLOEXEC), 0, UInt64(LK_RESOLVE_BENEATH | LK_RESOLVE_NO_SYMLINKS))
        }
    }

    // MARK: Paths

    /// Where an open fd really is (`/proc/self/fd`), empty for `/` or when unknown.
    static func path(of fd: Int32) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, Int(PATH_MAX))
        guard n > 0 else { return [] }
        var path = Array(buffer[..<n])
        if path == [slash] { path = [] }
        return path
    }

    /// `parent/name`; `name` when the parent is the root (`.`).
    static func join(_ parent: [UInt8], _ name: [UInt8]) -> [UInt8] {
        if parent == dot { return name }
        var p = parent
        p.reserveCapacity(parent.count + 1 + name.count)
        p.append(slash)
        p.append(contentsOf: name)
        return p
    }

    /// `root/path` for the calls without an fd-relative form (the xattr calls); `root` for `.`.
    static func absolute(_ root: [UInt8], _ path: [UInt8]) -> [UInt8] {
        path == dot || path.isEmpty ? root : root + [slash] + path
    }

    /// `("a/b", "c")` for `a/b/c`; `(".", "c")` for `c`; trailing slashes ignored.
    static func split(_ path: String) -> (dir: String, base: String) {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return (".", String(p)) }
        let dir = p[..<slash]
        return (dir.isEmpty ? "/" : String(dir), String(p[p.index(after: slash)...]))
    }

    /// The process's umask, read without changing it (`/proc/self/status`, Linux 4.7+).
    static func currentUmask() -> mode_t {
        guard let f = fopen("/proc/self/status", "r") else { return 0o022 }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let s = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if s.hasPrefix("Umask:") {
                let digits = s.dropFirst(6).filter { $0 >= "0" && $0 <= "7" }
                return mode_t(digits, radix: 8) ?? 0o022
            }
        }
        return 0o022
    }
}
