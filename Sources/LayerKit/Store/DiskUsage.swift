import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Bytes a tree takes on disk (allocated blocks, like `du -s --bytes` of the blocks): every
/// inode counted once, however many names it has inside the tree; symlinks are not followed.
/// Iterative (a `DirectoryCursor`): a tree of any depth costs a pending list per level.
enum DiskUsage {
    static func of(_ path: String) throws(StoreError) -> Int64 {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw .lastErrno(path: path, "cannot stat") }
        var total = Int64(st.st_blocks) * 512
        guard FileSystem.isDirectory(st) else { return total }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot open") }
        defer { close(fd) }
        do throws(Errno) { total += try ofContents(fd) } catch { throw .system(error, path: path, "cannot measure") }
        return total
    }

    /// The blocks of everything below the dir open at `fd` (not the dir itself).
    static func ofContents(_ fd: Int32) throws(Errno) -> Int64 {
        var seen = Set<InodeKey>()
        var total: Int64 = 0
        let cursor = try DirectoryCursor(root: fd)
        var pending: [[[UInt8]]] = [try measure(cursor.fd, &total, &seen)]
        while !pending.isEmpty {
            guard let next = pending[pending.count - 1].popLast() else {
                pending.removeLast()
                if !pending.isEmpty { try cursor.ascend() }
                continue
            }
            try cursor.descend(next)
            pending.append(try measure(cursor.fd, &total, &seen))
        }
        return total
    }

    /// Adds the blocks of the dir's entries and returns its subdirectories.
    private static func measure(_ dirFD: Int32, _ total: inout Int64, _ seen: inout Set<InodeKey>) throws(Errno) -> [[UInt8]] {
        var subdirectories = [[UInt8]]()
        for name in try FileSystem.names(of: dirFD) {
            guard let st = FileSystem.lstat(dirFD, name) else { continue }
            if st.st_nlink > 1 && !FileSystem.isDirectory(st) {
                guard seen.insert(InodeKey(st)).inserted else { continue }
            }
            total += Int64(st.st_blocks) * 512
            if FileSystem.isDirectory(st) { subdirectories.append(name) }
        }
        return subdirectories
    }
}
