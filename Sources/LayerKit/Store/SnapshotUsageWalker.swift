import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Bytes (allocated blocks) and inodes under a dir, walked iteratively with fds (no recursion over
/// a tree containerd or a container wrote; one open fd per level of the dir being walked), not
/// following symlinks, each hardlinked inode counted once. A name that vanishes during the walk
/// is skipped.
enum SnapshotUsageWalker {
    private struct Frame {
        let fd: Int32
        let path: String
        let names: [[UInt8]]
        var next = 0
    }

    static func usage(of path: String) throws(StoreError) -> SnapshotUsage {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw .lastErrno(path: path, "cannot stat") }
        var usage = SnapshotUsage(bytes: Int64(st.st_blocks) * 512, inodes: 1)
        guard FileSystem.isDirectory(st) else { return usage }
        let top = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard top >= 0 else { throw .lastErrno(path: path, "cannot open") }
        var stack = [Frame]()
        defer { for frame in stack { close(frame.fd) } }
        stack.append(Frame(fd: top, path: path, names: try list(top, path: path)))
        var seen = Set<[UInt64]>()
        while !stack.isEmpty {
            let last = stack.count - 1
            guard stack[last].next < stack[last].names.count else {
                close(stack.removeLast().fd)
                continue
            }
            let name = stack[last].names[stack[last].next]
            stack[last].next += 1
            let dirFD = stack[last].fd
            guard let entry = FileSystem.lstat(dirFD, name) else { continue }
            if entry.st_nlink > 1 && !FileSystem.isDirectory(entry) {
                guard seen.insert([UInt64(entry.st_dev), UInt64(entry.st_ino)]).inserted else { continue }
            }
            usage.bytes += Int64(entry.st_blocks) * 512
            usage.inodes += 1
            guard FileSystem.isDirectory(entry) else { continue }
            let childPath = stack[last].path + "/" + String(decoding: name, as: UTF8.self)
            let child = withCString(name) { openat(dirFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard child >= 0 else {
                if errno == ENOENT { continue }
                throw .lastErrno(path: childPath, "cannot open")
            }
            let names: [[UInt8]]
            do { names = try list(child, path: childPath) } catch {
                close(child)
                throw error
            }
            stack.append(Frame(fd: child, path: childPath, names: names))
        }
        return usage
    }

    private static func list(_ fd: Int32, path: String) throws(StoreError) -> [[UInt8]] {
        do throws(Errno) { return try FileSystem.names(of: fd) } catch {
            throw StoreError.system(error, path: path, "cannot read directory")
        }
    }
}
