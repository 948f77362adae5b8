import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// Writing whiteouts and opaque markers in the upper (callers hold the mutex).
extension UnionFileSystem {
    /// Whether a layer below the upper has `name` in the dir (a whiteout there ends the search):
    /// then removing the name needs a whiteout, and a dir made at the name must be opaque.
    func lowerHas(_ dir: UnionNode, _ dirPath: [UInt8], _ name: [UInt8]) -> Bool {
        let path = FileSystem.join(dirPath, name)
        for layer in dir.dirLayers where layer != UnionLayerStack.upper {
            guard let st = FileSystem.lstat(layers.fds[layer], path) else { continue }
            return !LayerFormat.isWhiteoutDevice(st)
        }
        return false
    }

    /// Names the union reserves in an aufs-form upper.
    func checkNotReserved(_ name: [UInt8], _ operation: String) throws(UnionError) {
        if layers.form == .aufs && name.starts(with: LayerFormat.whiteoutPrefix) {
            throw .with(EINVAL, operation + " (names starting with .wh. are whiteout markers in this union)", name)
        }
    }

    /// Leaves a whiteout for `name` in the upper dir `dirPath` (which exists in the upper),
    /// replacing a non-dir the upper has there. Overlay form: a 0/0 device made in the work dir
    /// and renamed over the name in one step; aufs form: `.wh.NAME`, then the name is removed.
    func placeWhiteout(_ dirPath: [UInt8], _ name: [UInt8]) throws(UnionError) {
        let upper = layers.fds[UnionLayerStack.upper]
        let path = FileSystem.join(dirPath, name)
        switch layers.form {
        case .overlay:
            let temp = tempName()
            if withCString(temp, { mknodat(layers.workFD, $0, LayerFormat.whiteoutDeviceMode, 0) }) != 0 { throw .last("whiteout: mknod", path) }
            if withCString(temp, { t in withCString(path) { renameat(layers.workFD, t, upper, $0) } }) != 0 {
                let e = UnionError.last("whiteout: rename into the upper", path)
                withCString(temp) { _ = unlinkat(layers.workFD, $0, 0) }
                throw e
            }
        case .aufs:
            let marker = FileSystem.join(dirPath, LayerFormat.whiteoutName(for: name))
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
            do throws(Errno) { try Xattrs.set(atPath: absolute, ns.opaque, OverlayXattrNamespace.opaqueValue) } catch {
                throw .with(error.rawValue, "mark opaque", relative)
            }
        case .aufs:
            let fd = withCString(FileSystem.join(relative, LayerFormat.opaqueMarker)) {
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
        let path = FileSystem.join(dirPath, name)
        var rc: Int32
        if let st = FileSystem.lstat(upper, path) {
            guard LayerFormat.isWhiteoutDevice(st) else { throw .with(EEXIST, operation, path) }
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
            let marker = FileSystem.join(dirPath, LayerFormat.whiteoutName(for: name))
            if withCString(marker, { unlinkat(upper, $0, 0) }) != 0 && errno != ENOENT { throw .last(operation + ": remove whiteout", path) }
        }
    }

    /// Empties an upper dir that shows nothing in the union (it can hold only whiteouts and markers).
    func clearMarkers(_ path: [UInt8]) throws(UnionError) {
        let upper = layers.fds[UnionLayerStack.upper]
        let dirFD: Int32
        do throws(Errno) { dirFD = try FileSystem.openDirectory(upper, path) } catch { throw .with(error.rawValue, "clear whiteouts", path) }
        defer { close(dirFD) }
        let names: [[UInt8]]
        do throws(Errno) { names = try FileSystem.names(of: dirFD) } catch { throw .with(error.rawValue, "clear whiteouts", path) }
        for name in names {
            do throws(Errno) { try FileSystem.removeTree(dirFD, name) } catch {
                throw .with(error.rawValue, "clear whiteouts", FileSystem.join(path, name))
            }
        }
    }
}
