import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension FileSystem {
    /// Removes `name` in the dir open at `parentFD` and everything below it; nothing if it does not
    /// exist. Symlinks are removed, never followed; a directory on another file system (a mount
    /// point: a container's rootfs still mounted, a bind) is never entered: `EBUSY`.
    ///
    /// Iterative, with one open directory at a time (`DirectoryCursor`): a tree of any depth is
    /// removed with memory for the path and the subdirectories still to visit on it.
    static func removeTree<Name: Collection>(_ parentFD: Int32, _ name: Name) throws(Errno) where Name.Element == UInt8 {
        let top = Array(name)
        guard let st = lstat(parentFD, top) else {
            if errno == ENOENT { return }
            throw Errno(rawValue: errno)
        }
        guard isDirectory(st) else {
            if withCString(top, { unlinkat(parentFD, $0, 0) }) != 0 && errno != ENOENT { throw Errno(rawValue: errno) }
            return
        }
        guard let parent = attributes(of: parentFD) else { throw Errno(rawValue: errno) }
        guard parent.st_dev == st.st_dev else { throw .resourceBusy }
        let device = st.st_dev

        let cursor = try DirectoryCursor(root: parentFD)
        try cursor.descend(top)
        // The subdirectories still to remove, per level.
        var pending: [[[UInt8]]] = [try clearFiles(cursor.fd, device: device)]
        while !pending.isEmpty {
            if let next = pending[pending.count - 1].popLast() {
                let childStat = try cursor.descend(next)
                guard childStat.st_dev == device else { throw .resourceBusy }
                pending.append(try clearFiles(cursor.fd, device: device))
                continue
            }
            // Everything below the current dir is gone: remove it from its parent.
            let left = try cursor.ascend()
            pending.removeLast()
            if withCString(left, { unlinkat(cursor.fd, $0, AT_REMOVEDIR) }) != 0 {
                guard errno == ENOTEMPTY || errno == EEXIST else { throw Errno(rawValue: errno) }
                // Something appeared meanwhile: go through it again.
                try cursor.descend(left)
                pending.append(try clearFiles(cursor.fd, device: device))
            }
        }
    }

    /// Removes the tree at a path (the last component is never followed).
    static func removeTree(atPath path: String) throws(Errno) {
        let (dir, base) = split(path)
        let fd = try openDirectory(atPath: dir)
        defer { close(fd) }
        try removeTree(fd, Array(base.utf8))
    }

    /// Unlinks every non-directory in the dir and returns its subdirectories (on `device`).
    private static func clearFiles(_ dirFD: Int32, device: dev_t) throws(Errno) -> [[UInt8]] {
        var subdirectories = [[UInt8]]()
        for entry in try entries(of: dirFD) {
            var isDir = entry.type == UInt8(DT_DIR)
            if entry.type == UInt8(DT_UNKNOWN) {
                guard let st = lstat(dirFD, entry.name) else { continue }
                isDir = isDirectory(st)
            }
            if isDir {
                subdirectories.append(entry.name)
            } else if withCString(entry.name, { unlinkat(dirFD, $0, 0) }) != 0 && errno != ENOENT {
                if errno == EISDIR { subdirectories.append(entry.name); continue }
                throw Errno(rawValue: errno)
            }
        }
        return subdirectories
    }
}
