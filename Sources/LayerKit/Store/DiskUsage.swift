import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Bytes a tree takes on disk (allocated blocks, like `du -s --bytes` of the blocks): every
/// inode counted once, however many names it has inside the tree; symlinks are not followed.
enum DiskUsage {
    static func of(_ path: String) throws(StoreError) -> Int64 {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw .lastErrno(path: path, "cannot stat") }
        var seen = Set<[UInt64]>()
        var total = Int64(st.st_blocks) * 512
        guard FS.isDir(st) else { return total }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot open") }
        defer { close(fd) }
        total += try walk(fd, path: path, seen: &seen)
        return total
    }

    private static func walk(_ dirFD: Int32, path: String, seen: inout Set<[UInt64]>) throws(StoreError) -> Int64 {
        let names: [[UInt8]]
        do { names = try FS.listDir(dirFD) } catch { throw StoreError(.system(error.errno ?? .ioError), path: path, error.reason) }
        var total: Int64 = 0
        for name in names {
            guard let st = FS.lstat(dirFD, name[...]) else { continue }
            if st.st_nlink > 1 && !FS.isDir(st) {
                guard seen.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else { continue }
            }
            total += Int64(st.st_blocks) * 512
            if FS.isDir(st) {
                let child = withCString(name) { openat(dirFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                let childPath = path + "/" + String(decoding: name, as: UTF8.self)
                guard child >= 0 else { throw .lastErrno(path: childPath, "cannot open") }
                defer { close(child) }
                total += try walk(child, path: childPath, seen: &seen)
            }
        }
        return total
    }
}
