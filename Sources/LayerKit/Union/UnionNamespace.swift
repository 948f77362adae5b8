import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// Who creates an entry: it is given this owner (when the union runs as root).
public struct UnionCaller: Sendable {
    public var uid: uid_t
    public var gid: gid_t
    public init(uid: uid_t, gid: gid_t) { self.uid = uid; self.gid = gid }
    /// The union process itself.
    public static var current: UnionCaller { UnionCaller(uid: geteuid(), gid: getegid()) }
}

extension UnionFileSystem {
    // MARK: Creating

    /// Makes a new entry. Where the upper has nothing at the name, `make` creates it there
    /// directly (it is new: nothing half-made can hide an older version). Over a whiteout it is
    /// built in the work dir under a temporary name, given its owner (and made opaque for a dir
    /// where a lower layer has the name), then renamed over the whiteout in one step.
    /// Callers hold the mutex. Returns the node (with one kernel reference counted) and its stat.
    private func createEntry(_ parentIno: UInt64, _ name: [UInt8], _ operation: String, caller: UnionCaller,
                             make: (_ dirFD: Int32, _ name: [UInt8]) throws(UnionError) -> Void) throws(UnionError) -> (UnionNode, stat) {
        let (dir, dirPath) = try directory(parentIno, operation)
        try Self.validName(name, operation)
        try checkNotReserved(name, operation)
        let path = FileSystem.join(dirPath, name)
        if try child(dir, dirPath, name) != nil { throw .with(EEXIST, operation, path) }
        try copyUp(dir)
        let upper = layers.fds[UnionLayerStack.upper]
        var direct = true
        if let existing = FileSystem.lstat(upper, path) {
            guard LayerFormat.isWhiteoutDevice(existing) else { throw .with(EEXIST, operation, path) }
            direct = false
        } else if layers.form == .aufs && FileSystem.exists(upper, FileSystem.join(dirPath, LayerFormat.whiteoutName(for: name))) {
            direct = false
        }
        let (entryDirFD, entryName) = direct ? (upper, path) : (layers.workFD, tempName())
        do throws(UnionError) {
            try make(entryDirFD, entryName)
            guard var built = FileSystem.lstat(entryDirFD, entryName) else { throw .last(operation, path) }
            let isDirectory = FileSystem.isDirectory(built)
            if canChown {
                // Created by root: give it to the caller; the group stays the dir's under a setgid dir.
                var gid = caller.gid
                if let parentStat = FileSystem.lstat(upper, dirPath), parentStat.st_mode & mode_t(S_ISGID) != 0 {
                    gid = parentStat.st_gid
                    if isDirectory && built.st_mode & mode_t(S_ISGID) == 0 {
                        withCString(entryName) { _ = fchmodat(entryDirFD, $0, (built.st_mode & 0o7777) | mode_t(S_ISGID), 0) }
                    }
                }
                if built.st_uid != caller.uid || built.st_gid != gid {
                    if withCString(entryName, { fchownat(entryDirFD, $0, caller.uid, gid, AT_SYMLINK_NOFOLLOW) }) != 0 { throw .last(operation + ": chown", path) }
                    if let again = FileSystem.lstat(entryDirFD, entryName) { built = again }
                }
            }
            if !direct {
                if isDirectory && lowerHas(dir, dirPath, name) {
                    try markOpaque(fd: layers.workFD, relative: entryName, absolute: FileSystem.absolute(layers.workRoot, entryName))
                }
                try install(entryName, isDirectory: isDirectory, dirPath: dirPath, name: name, operation)
            }
            let node = makeNode(parent: dir, name: name, layer: UnionLayerStack.upper,
                                dirLayers: isDirectory ? [UnionLayerStack.upper] : [], type: FileSystem.fileType(built))
            built.st_ino = ino_t(node.ino)
            node.lookups += 1
            return (node, built)
        } catch {
            try? FileSystem.removeTree(entryDirFD, entryName)
            throw error
        }
    }

    /// Creates and opens a regular file (`open` with O_CREAT|O_EXCL). Returns its attributes and
    /// an fd opened with `flags`; the caller owns the fd.
    public func create(parent: UInt64, name: [UInt8], mode: mode_t, flags: Int32, caller: UnionCaller) throws(UnionError) -> (stat, Int32) {
        try mutex.locked { () throws(UnionError) -> (stat, Int32) in
            var fd: Int32 = -1
            let openFlags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)) | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
            do throws(UnionError) {
                let (_, st) = try createEntry(parent, name, "create", caller: caller) { (dirFD, entry) throws(UnionError) in
                    fd = withCString(entry) { openat(dirFD, $0, openFlags, mode & 0o7777) }
                    if fd < 0 { throw .last("create", name) }
                }
                return (st, fd)
            } catch {
                if fd >= 0 { close(fd) }
                throw error
            }
        }
    }

    /// Makes a dir.
    public func makeDirectory(parent: UInt64, name: [UInt8], mode: mode_t, caller: UnionCaller) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            try createEntry(parent, name, "mkdir", caller: caller) { (dirFD, entry) throws(UnionError) in
                if withCString(entry, { mkdirat(dirFD, $0, mode & 0o7777) }) != 0 { throw .last("mkdir", name) }
            }.1
        }
    }

    /// Makes a regular file, fifo, socket or device node.
    public func makeNode(parent: UInt64, name: [UInt8], mode: mode_t, device: dev_t, caller: UnionCaller) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            if mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFCHR) && device == 0 {
                throw .with(EPERM, "mknod (a 0/0 device is a whiteout)", name)
            }
            return try createEntry(parent, name, "mknod", caller: caller) { (dirFD, entry) throws(UnionError) in
                if withCString(entry, { mknodat(dirFD, $0, mode, device) }) != 0 { throw .last("mknod", name) }
            }.1
        }
    }

    /// Makes a symlink to `target`.
    public func makeSymlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: UnionCaller) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            try createEntry(parent, name, "symlink", caller: caller) { (dirFD, entry) throws(UnionError) in
                if withCString(target, { t in withCString(entry) { symlinkat(t, dirFD, $0) } }) != 0 { throw .last("symlink", name) }
            }.1
        }
    }

    /// Adds the name `newName` in `newParent` for the non-dir `ino` (copying it up first: hardlinks
    /// live in the upper). Both names then share one inode number.
    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            let node = try node(ino, "link")
            guard !node.isDirectory else { throw .with(EPERM, "link", try linkedPath(node, "link")) }
            // First: the copy-up may release the mutex, so everything is looked up after it.
            try copyUp(node)
            let sourcePath = try linkedPath(node, "link")
            let (dir, dirPath) = try directory(newParent, "link")
            try Self.validName(newName, "link")
            try checkNotReserved(newName, "link")
            let path = FileSystem.join(dirPath, newName)
            if try child(dir, dirPath, newName) != nil { throw .with(EEXIST, "link", path) }
            try copyUp(dir)
            let upper = layers.fds[UnionLayerStack.upper]
            let temp = tempName()
            if withCString(sourcePath, { s in withCString(temp) { linkat(upper, s, layers.workFD, $0, 0) } }) != 0 {
                throw .last("link", path)
            }
            do throws(UnionError) {
                try install(temp, isDirectory: false, dirPath: dirPath, name: newName, "link")
            } catch {
                withCString(temp) { _ = unlinkat(layers.workFD, $0, 0) }
                throw error
            }
            node.names.append((dir, newName))
            dir.children[newName] = node
            let st = try stat(of: node, path: path, "link")
            if let backing = FileSystem.lstat(upper, path) {
                let key = HardlinkKey(dev: UInt64(backing.st_dev), ino: UInt64(backing.st_ino))
                hardlinks[key] = node
                node.hardlinkKey = key
            }
            node.lookups += 1
            return st
        }
    }

    // MARK: Removing

    /// Removes a non-dir name; a whiteout stays in the upper when a lower layer has the name.
    public func unlink(parent: UInt64, name: [UInt8]) throws(UnionError) {
        try mutex.locked { () throws(UnionError) in
            let (dir, dirPath) = try directory(parent, "unlink")
            let path = FileSystem.join(dirPath, name)
            guard let node = try child(dir, dirPath, name) else { throw .with(ENOENT, "unlink", path) }
            guard !node.isDirectory else { throw .with(EISDIR, "unlink", path) }
            var held = try holdBeforeLastName(node, at: path, "unlink")
            defer { if let held { close(held) } }
            if lowerHas(dir, dirPath, name) {
                try copyUp(dir)
                try placeWhiteout(dirPath, name)
            } else if withCString(path, { unlinkat(layers.fds[UnionLayerStack.upper], $0, 0) }) != 0 {
                throw .last("unlink", path)
            }
            detach(node, parent: dir, name: name, held: held)
            held = nil
        }
    }

    /// Removes a dir that shows no entries; a whiteout stays when a lower layer has the name.
    public func removeDirectory(parent: UInt64, name: [UInt8]) throws(UnionError) {
        try mutex.locked { () throws(UnionError) in
            let (dir, dirPath) = try directory(parent, "rmdir")
            let path = FileSystem.join(dirPath, name)
            guard let node = try child(dir, dirPath, name) else { throw .with(ENOENT, "rmdir", path) }
            guard node.isDirectory else { throw .with(ENOTDIR, "rmdir", path) }
            guard try isEmptyInUnion(node, path) else { throw .with(ENOTEMPTY, "rmdir", path) }
            var held = try holdBeforeLastName(node, at: path, "rmdir")
            defer { if let held { close(held) } }
            let needWhiteout = lowerHas(dir, dirPath, name)
            try copyUp(dir)
            let upper = layers.fds[UnionLayerStack.upper]
            if node.dirLayers.contains(UnionLayerStack.upper) {
                try clearMarkers(path)
                if needWhiteout, case .overlay = layers.form {
                    // Swap a fresh whiteout with the dir in one step, then remove the dir from the work dir.
                    let temp = tempName()
                    if withCString(temp, { mknodat(layers.workFD, $0, LayerFormat.whiteoutDeviceMode, 0) }) != 0 { throw .last("rmdir: whiteout", path) }
                    if withCString(temp, { t in withCString(path) { lk_renameat2(layers.workFD, t, upper, $0, UInt32(LK_RENAME_EXCHANGE)) } }) != 0 {
                        let e = UnionError.last("rmdir: whiteout", path)
                        withCString(temp) { _ = unlinkat(layers.workFD, $0, 0) }
                        throw e
                    }
                    withCString(temp) { _ = unlinkat(layers.workFD, $0, AT_REMOVEDIR) }
                } else {
                    if needWhiteout {
                        let marker = FileSystem.join(dirPath, LayerFormat.whiteoutName(for: name))
                        let fd = withCString(marker) { openat(upper, $0, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) }
                        guard fd >= 0 else { throw .last("rmdir: whiteout", path) }
                        close(fd)
                    }
                    if withCString(path, { unlinkat(upper, $0, AT_REMOVEDIR) }) != 0 { throw .last("rmdir", path) }
                }
            } else if needWhiteout {
                try placeWhiteout(dirPath, name)
            }
            detach(node, parent: dir, name: name, held: held)
            held = nil
        }
    }

    // MARK: Renaming

    /// Renames an entry. Files are copied up, renamed in the upper, and a whiteout is left at the
    /// old name when a lower layer has it. A dir with content in a lower layer is refused with
    /// EXDEV, as kernel overlayfs without redirect_dir does (`mv` then copies it). Only
    /// RENAME_NOREPLACE is supported among the flags.
    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: UInt32 = 0) throws(UnionError) {
        try mutex.locked { () throws(UnionError) in
            // A lower file is copied up first: that may release the mutex, so everything is looked
            // up after it.
            do {
                let (dir, dirPath) = try directory(parent, "rename")
                if let node = try child(dir, dirPath, name), !node.isDirectory { try copyUp(node) }
            }
            let (dir, dirPath) = try directory(parent, "rename")
            let (newDir, newDirPath) = try directory(newParent, "rename")
            let oldPath = FileSystem.join(dirPath, name)
            let newPath = FileSystem.join(newDirPath, newName)
            guard flags & ~UInt32(LK_RENAME_NOREPLACE) == 0 else { throw .with(EINVAL, "rename (flags)", oldPath) }
            try Self.validName(newName, "rename")
            try checkNotReserved(newName, "rename")
            guard let node = try child(dir, dirPath, name) else { throw .with(ENOENT, "rename", oldPath) }
            if dir === newDir && name == newName { return }
            if node.isDirectory && node.hasLowerContent { throw .with(EXDEV, "rename (a dir with content in a lower layer)", oldPath) }
            let target = try child(newDir, newDirPath, newName)
            if let target {
                if flags & UInt32(LK_RENAME_NOREPLACE) != 0 { throw .with(EEXIST, "rename", newPath) }
                if target === node { return }
                if node.isDirectory && !target.isDirectory { throw .with(ENOTDIR, "rename", newPath) }
                if !node.isDirectory && target.isDirectory { throw .with(EISDIR, "rename", newPath) }
                if target.isDirectory {
                    guard try isEmptyInUnion(target, newPath) else { throw .with(ENOTEMPTY, "rename", newPath) }
                }
            }
            let oldNeedsWhiteout = lowerHas(dir, dirPath, name)
            let newHasLower = lowerHas(newDir, newDirPath, newName)
            try copyUp(node)
            try copyUp(newDir)
            var heldTarget: Int32?
            defer { if let heldTarget { close(heldTarget) } }
            if let target { heldTarget = try holdBeforeLastName(target, at: newPath, "rename") }
            let upper = layers.fds[UnionLayerStack.upper]
            if let target, target.isDirectory, target.dirLayers.contains(UnionLayerStack.upper) {
                try clearMarkers(newPath)
            }
            let upperAtNew = FileSystem.lstat(upper, newPath)
            if node.isDirectory {
                if let upperAtNew, !FileSystem.isDirectory(upperAtNew) {
                    // Over a whiteout: swap, and the whiteout lands at the old name, where it is
                    // kept when a lower layer has that name.
                    if withCString(oldPath, { o in withCString(newPath) { lk_renameat2(upper, o, upper, $0, UInt32(LK_RENAME_EXCHANGE)) } }) != 0 {
                        throw .last("rename", oldPath)
                    }
                    if !(oldNeedsWhiteout && layers.form != .aufs) {
                        if withCString(oldPath, { unlinkat(upper, $0, 0) }) != 0 { throw .last("rename", oldPath) }
                        if oldNeedsWhiteout { try placeWhiteout(dirPath, name) }
                    }
                } else {
                    if withCString(oldPath, { o in withCString(newPath) { renameat(upper, o, upper, $0) } }) != 0 { throw .last("rename", oldPath) }
                    if oldNeedsWhiteout { try placeWhiteout(dirPath, name) }
                }
                if newHasLower {
                    try markOpaque(fd: upper, relative: newPath, absolute: FileSystem.absolute(layers.roots[UnionLayerStack.upper], newPath))
                }
            } else {
                var done = false
                if oldNeedsWhiteout, case .overlay = layers.form {
                    // RENAME_WHITEOUT leaves the whiteout at the old name in the same step.
                    done = withCString(oldPath, { o in withCString(newPath) { lk_renameat2(upper, o, upper, $0, 4 /* RENAME_WHITEOUT */) } }) == 0
                    if !done && errno != EINVAL && errno != EPERM { throw .last("rename", oldPath) }
                }
                if !done {
                    if withCString(oldPath, { o in withCString(newPath) { renameat(upper, o, upper, $0) } }) != 0 { throw .last("rename", oldPath) }
                    if oldNeedsWhiteout { try placeWhiteout(dirPath, name) }
                }
            }
            if layers.form == .aufs {
                let marker = FileSystem.join(newDirPath, LayerFormat.whiteoutName(for: newName))
                if withCString(marker, { unlinkat(upper, $0, 0) }) != 0 && errno != ENOENT { throw .last("rename: remove whiteout", newPath) }
            }
            if let target {
                detach(target, parent: newDir, name: newName, held: heldTarget)
                heldTarget = nil
            }
            node.removeName(parent: dir, name: name)
            node.names.append((newDir, newName))
            newDir.children[newName] = node
            node.layer = UnionLayerStack.upper
        }
    }
}
