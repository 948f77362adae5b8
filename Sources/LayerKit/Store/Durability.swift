import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Getting things onto the disk in the order the store's crash safety relies on.
enum Durability {
    /// Writes out everything dirty on the file system holding `path` (one call for a whole
    /// unpacked layer, rather than an fsync per file).
    static func syncFileSystem(containing path: String) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot open to sync") }
        defer { close(fd) }
        guard lk_syncfs(fd) == 0 else { throw .lastErrno(path: path, "syncfs failed") }
    }

    /// fsyncs a directory, making renames, links and removals in it durable.
    static func syncDirectory(_ path: String) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot open to sync") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .lastErrno(path: path, "fsync failed") }
    }
}
