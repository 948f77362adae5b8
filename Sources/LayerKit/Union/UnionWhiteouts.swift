import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

// Writing whiteouts and opaque markers in the upper (callers hold the mutex).
extension UnionFileSystem {
    /// Whether a layer below the upper has `name` in the dir (a whiteout there ends the search):
    /// then removing the name needs a whiteout, and a dir made at the name must be opaque.
    func lowerHas(_ dir: UnionNode, _ dirPath: [UInt8], _ name: [UInt8]) -> Bool {
        let path = UnionSys.join(dirPath, name)
        for layer in dir.dirLayers where layer != UnionLayerStack.upper {
            guard let st = UnionSys.lstat(layers.fds[layer], path) else { continue }
            return !UnionSys.isWhiteoutDevice(st)
        }
        return false
    }

    /// Names the union reserves in an aufs-form upper.
    func checkNotReserved(_ name: [UInt8], _ operation: String) throws(UnionError) {
        if layers.form == .aufs && name.starts(with: UnionLayerStack.whiteoutPrefix) {
            throw .with(EINVAL, operation + " (names starting with .wh. are whiteout markers in this union)", name)
        }
    }

    /// Leaves a whiteout for `name` in the upper dir `dirPath` (which exists in the upper),
    /// replacing a non-dir the upper has there. Overlay form: a 0/0 device made in the work dir
    /// and renamed over the name in one step; aufs form: `.wh.NAME`, then the name is removed.
    func placeWhiteout(_ dirPath: [UInt8], _ name: [UInt8]) throws(UnionError) {
        let upper = layers.fds[UnionLayerStack.upper]
        let path = UnionSys.join(dirPath, name)
        switch layers.form {
        case .overlay:
            let temp = tempName()
            if withCString(temp, { mknodat(layers.workFD, $0, mode_t(LK_S_IFCHR), 0) }) != 0 { throw .last("whiteout: mknod", path) }
            if withCString(temp, { t in withCString(path) { renameat(layers.workFD, t, upper, $0) } }) != 0 {
                let e = UnionError.last("whiteout: rename into the upper", path)
                withCString(temp) { _ = unlinkat(layers.workFD, $0, 0) }
                throw e
            }
        case .aufs:
            let marker = UnionSys.join(dirPath, UnionLayerStack.whiteoutPrefix + name)
            let fd = withCString(marker) { openat(upper, $0, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) }
            guard fd >= 0 else { throw .last("whiteout: create marker", path) }
            close(fd)
            if withCString(path, { unlinkat(upper, $0, 0) }) != 0 && errno != ENOENT { throw .last("whiteout: unlink", path) }
        }
    }

    /// Marks a dir (by absolute path, or relative to `dirFD` for the aufs marker) opaque.
    func markOpaque(fd dirFD: Int32, relative: [UInt8], absolute: [UInt8]) throws(UnionError) {
        switch layers.form {
        case .overlay(let ns):
            if withCString(absolute, { lsetxattr($0, ns.opaqueName, "y", 1, 0) }) != 0 { throw .last("mark opaque", relative) }
        case .aufs:
            let fd = withCString(UnionSys.join(relative, UnionLayerStack.opaqueMarker)) {
                openat(dirFD, $0, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            }
            guard fd >= 0 else { throw .last("mark opaque", relative) }
            close(fd)
        }
    }

    /// Renames `temp` from the work dir to `name` in the upper dir `dirPath`, replacing a
    /// whiteout there (in one step in overlay form) and fails with EEXIST on anything else.
    func install(_ temp: [UInt8], isDirectory: Bool, dirPath: [UInt8], name: [UInt8], _ operation: String) throws(UnionError) {
        let upper = layers.fds[UnionLayerStack.upper]
        let work = layers.workFD
        let path = UnionSys.join(dirPath, name)
        var rc: Int32
        if let st = UnionSys.lstat(upper, path) {
            guard UnionSys.isWhiteoutDevice(st) else { throw .with(EEXIST, operation, path) }
            if isDirectory {
                // A dir cannot be renamed over a device: swap them, then drop the whiteout.
                rc = withCString(temp) { t in withCString(path) { lk_renameat2(work, t, upper, $0, UInt32(LK_RENAME_EXCHANGE)) } }
                if rc == 0 { withCString(temp) { _ = unlinkat(work, $0, 0) } }
            } else {
                rc = withCString(temp) { t in withCString(path) { renameat(work, t, upper, $0) } }
            }
        } else {
            rc = withCString(temp) { t in withCString(path) { lk_renameat2(work, t, upper, $0, UInt32(LK_RENAME_NOREPLACE)) } }
        }
        guard rc == 0 else { throw .last(operation + ": rename into the upper", path) }
        if layers.form == .aufs {
            let marker = UnionSys.join(dirPath, UnionLayerStack.whiteoutPrefix + name)
            if withCString(marker, { unlinkat(upper, $0, 0) }) != 0 && errno != ENOENT { throw .last(operation + ": remove whiteout", path) }
        }
    }

    /// Empties an upper dir that shows nothing in the union (it can hold only whiteouts and markers).
    func clearMarkers(_ path: [UInt8]) throws(UnionError) {
        let upper = layers.fds[UnionLayerStack.upper]
        guard let names = UnionSys.listDirectory(upper, path) else { throw .last("clear whiteouts", path) }
        for (name, _) in names {
            let child = UnionSys.join(path, name)
            let dirFD = withCString(path) { openat(upper, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard dirFD >= 0 else { throw .last("clear whiteouts", child) }
            defer { close(dirFD) }
            do throws(LayerError) { try FS.removeTree(dirFD, name[...]) } catch { throw .with(EIO, "clear whiteouts", child) }
        }
    }
}
