import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Small fd-relative file system helpers shared by the apply engine and the unpacker.
/// None of them follows a symlink in the final component.
enum FS {
    static func lstat(_ dirFD: Int32, _ name: ArraySlice<UInt8>) -> stat? {
        var st = stat()
        let rc = withCString(name) { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
        return rc == 0 ? st : nil
    }

    @inline(__always)
    static func fileType(_ st: stat) -> mode_t { st.st_mode & mode_t(LK_S_IFMT) }

    static func isDir(_ st: stat) -> Bool { fileType(st) == mode_t(LK_S_IFDIR) }

    /// The names in a directory, without `.` and `..`.
    static func listDir(_ fd: Int32) throws(LayerError) -> [[UInt8]] {
        let dupFD = dup(fd)
        guard dupFD >= 0, let dir = fdopendir(dupFD) else {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot read directory")
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names = [[UInt8]]()
        while let ent = readdir(dir) {
            let name: [UInt8] = withUnsafeBytes(of: &ent.pointee.d_name) { raw in
                let len = strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
                return Array(raw[..<len])
            }
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            names.append(name)
        }
        return names
    }

    /// Removes `name` in `parentFD` and everything below it; nothing if it does not exist.
    static func removeTree(_ parentFD: Int32, _ name: ArraySlice<UInt8>) throws(LayerError) {
        guard let st = lstat(parentFD, name) else { return }
        if isDir(st) {
            let fd = withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open directory to remove it") }
            defer { close(fd) }
            // Never delete through a mount point (a container's rootfs still mounted, a bind).
            var parent = stat()
            if fstat(parentFD, &parent) == 0 && parent.st_dev != st.st_dev {
                throw LayerError(.system(.resourceBusy), "\(String(decoding: name, as: UTF8.self)) is a mount point: not removing what is mounted there")
            }
            for child in try listDir(fd) { try removeTree(fd, child[...]) }
            if withCString(name, { unlinkat(parentFD, $0, AT_REMOVEDIR) }) != 0 {
                throw .system(Errno(rawValue: errno), entry: nil, "cannot remove directory")
            }
        } else if withCString(name, { unlinkat(parentFD, $0, 0) }) != 0 && errno != ENOENT {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot remove existing entry")
        }
    }

    /// Removes the tree at an absolute or relative path.
    static func removeTree(atPath path: String) throws(LayerError) {
        let (dir, base) = split(path)
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open \(dir)") }
        defer { close(fd) }
        try removeTree(fd, Array(base.utf8)[...])
    }

    /// `("a/b", "c")` for `a/b/c`; `(".", "c")` for `c`; trailing slashes ignored.
    static func split(_ path: String) -> (dir: String, base: String) {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return (".", String(p)) }
        let dir = p[..<slash]
        return (dir.isEmpty ? "/" : String(dir), String(p[p.index(after: slash)...]))
    }
}
