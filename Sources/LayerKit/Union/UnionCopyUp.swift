import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension UnionFileSystem {
    /// A fresh temporary name in the work dir (callers hold the mutex).
    func tempName() -> [UInt8] {
        tempCounter += 1
        return Array((UnionLayerStack.tempPrefix + String(tempCounter)).utf8)
    }

    /// Makes sure `node` lives in the upper: copies its parents up (dirs with their metadata),
    /// then the entry itself — content with its holes, owner, mode, times and xattrs — built under
    /// a temporary name in the work dir and renamed into place, so no half copy is ever visible.
    /// `withoutData` copies a file up empty (it is about to be truncated to 0).
    ///
    /// Callers hold the mutex. The content of a regular file is copied with the mutex released
    /// (other operations go on meanwhile; a second copy-up of the same node waits for the first),
    /// so a caller must not rely on what it looked up before calling this for a file.
    func copyUp(_ node: UnionNode, withoutData: Bool = false) throws(UnionError) {
        while node.copyingUp { mutex.wait() }
        if node.layer == UnionLayerStack.upper { return }
        // The parents first, top down, without recursion (a lower tree may be deep). They are
        // dirs: metadata only, the mutex stays held.
        var missing: [UnionNode] = []
        var next = node.parent
        while let dir = next, dir.layer != UnionLayerStack.upper {
            missing.append(dir)
            next = dir.parent
        }
        guard next != nil else { throw UnionError(ENOENT, "copy-up", "#\(node.ino) (removed)") }
        for dir in missing.reversed() { try copyUpEntry(dir, withoutData: false) }
        try copyUpEntry(node, withoutData: withoutData)
    }

    /// Copies one entry up, its parent being in the upper already.
    private func copyUpEntry(_ node: UnionNode, withoutData: Bool) throws(UnionError) {
        let path = try linkedPath(node, "copy-up")
        let sourceLayer = node.layer
        guard let st = FileSystem.lstat(layers.fds[sourceLayer], path) else { throw .last("copy-up", path) }
        let temp = tempName()
        let work = layers.workFD
        let copyOutsideLock = FileSystem.isRegularFile(st) && !withoutData && st.st_size > 0
        do throws(UnionError) {
            if copyOutsideLock {
                node.copyingUp = true
                mutex.unlock()
                var failure: UnionError?
                do throws(UnionError) {
                    try buildCopy(of: path, st: st, from: sourceLayer, into: temp, withoutData: false)
                } catch {
                    failure = error
                }
                mutex.lock()
                node.copyingUp = false
                mutex.broadcast()
                if let failure { throw failure }
                // Removed meanwhile (unlink needs no copy-up): the copy is not wanted any more.
                guard node.isLinked, node.path == path else { throw .with(ENOENT, "copy-up", path) }
            } else {
                try buildCopy(of: path, st: st, from: sourceLayer, into: temp, withoutData: withoutData)
            }
            // The parent is in the upper now; the name is free there (the entry was visible below).
            if withCString(temp, { t in withCString(path) { lk_renameat2(work, t, layers.fds[0], $0, UInt32(LK_RENAME_NOREPLACE)) } }) != 0 {
                throw .last("copy-up: rename into the upper", path)
            }
        } catch {
            try? FileSystem.removeTree(work, temp)
            throw error
        }
        node.layer = UnionLayerStack.upper
        if node.isDirectory { node.dirLayers.insert(UnionLayerStack.upper, at: 0) }
    }

    /// Writes a copy of `path` (from `layer`) as `temp` in the work dir, metadata included.
    private func buildCopy(of path: [UInt8], st: stat, from layer: Int, into temp: [UInt8], withoutData: Bool) throws(UnionError) {
        let work = layers.workFD
        let sourceFD = layers.fds[layer]
        let source = FileSystem.absolute(layers.roots[layer], path)
        let type = FileSystem.fileType(st)
        switch type {
        case mode_t(LK_S_IFREG):
            let input = withCString(path) { openat(sourceFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            guard input >= 0 else { throw .last("copy-up: open", path) }
            defer { close(input) }
            let output = withCString(temp) { openat(work, $0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
            guard output >= 0 else { throw .last("copy-up: create in the work dir", path) }
            defer { close(output) }
            if !withoutData {
                do throws(Errno) { try DataCopy.copySparse(from: input, to: output, size: Int64(st.st_size)) } catch {
                    throw UnionError(error.rawValue, "copy-up: copy data", String(decoding: path, as: UTF8.self))
                }
            }
            try copyXattrs(from: source, to: output, orPath: nil, path: path)
            if canChown && fchown(output, st.st_uid, st.st_gid) != 0 { throw .last("copy-up: chown", path) }
            if fchmod(output, st.st_mode & 0o7777) != 0 { throw .last("copy-up: chmod", path) }
            var times = [st.st_atim, st.st_mtim]
            if futimens(output, &times) != 0 { throw .last("copy-up: set times", path) }
            if options.syncCopyUp && fsync(output) != 0 { throw .last("copy-up: fsync", path) }
            return
        case mode_t(LK_S_IFDIR):
            if withCString(temp, { mkdirat(work, $0, 0o700) }) != 0 { throw .last("copy-up: mkdir in the work dir", path) }
        case mode_t(LK_S_IFLNK):
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = withCString(path) { readlinkat(sourceFD, $0, &buffer, buffer.count - 1) }
            guard n >= 0 else { throw .last("copy-up: readlink", path) }
            buffer[n] = 0
            if withCString(temp, { symlinkat(buffer, work, $0) }) != 0 { throw .last("copy-up: symlink in the work dir", path) }
        default:
            if withCString(temp, { mknodat(work, $0, st.st_mode, st.st_rdev) }) != 0 { throw .last("copy-up: mknod in the work dir", path) }
        }
        let tempAbs = FileSystem.absolute(layers.workRoot, temp)
        try copyXattrs(from: source, to: -1, orPath: tempAbs, path: path)
        if canChown && withCString(temp, { fchownat(work, $0, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) }) != 0 {
            throw .last("copy-up: chown", path)
        }
        if type != mode_t(LK_S_IFLNK) && withCString(temp, { fchmodat(work, $0, st.st_mode & 0o7777, 0) }) != 0 {
            throw .last("copy-up: chmod", path)
        }
        var times = [st.st_atim, st.st_mtim]
        if withCString(temp, { utimensat(work, $0, &times, AT_SYMLINK_NOFOLLOW) }) != 0 { throw .last("copy-up: set times", path) }
    }

    /// Copies the xattrs a reader sees (not overlayfs's own) onto an fd or, for non-files, a path.
    private func copyXattrs(from source: [UInt8], to fd: Int32, orPath target: [UInt8]?, path: [UInt8]) throws(UnionError) {
        guard let names = Xattrs.names(atPath: source) else { throw .last("copy-up: list xattrs", path) }
        for name in names where XattrPolicy.copyUp.carries(name) {
            guard let value = Xattrs.value(atPath: source, name) else { continue }
            let rc = value.withUnsafeBytes { v in
                if let target { return withCString(target) { lsetxattr($0, name, v.baseAddress, v.count, 0) } }
                return fsetxattr(fd, name, v.baseAddress, v.count, 0)
            }
            if rc != 0 {
                // A label the upper's file system or our privileges cannot take is not worth failing for.
                if name.hasPrefix("security.selinux") || errno == ENOTSUP { continue }
                throw .last("copy-up: set xattr \(name)", path)
            }
        }
    }
}
