import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Finds what changed, from two full trees or from an overlay/aufs upper dir.
enum ChangeWalker {
    // MARK: - Two trees

    /// Walks OLD and NEW in step, dir by dir (names sorted), comparing metadata first and contents
    /// only where metadata cannot decide (same size and mtime, the mtime without a sub-second
    /// part, as tar-extracted files have).
    static func twoTrees(oldFD: Int32, changes: ChangeSet, compareContents: Bool) throws(LayerError) {
        var ost = stat(), nst = stat()
        fstat(oldFD, &ost)
        fstat(changes.newRootFD, &nst)
        let dot = Array(".".utf8)[...]
        if try metadataDiffers(ost, nst, oldFD: oldFD, newFD: changes.newRootFD, name: dot, path: .root, policy: changes.xattrPolicy)
            || ost.st_mtim.tv_sec != nst.st_mtim.tv_sec || ost.st_mtim.tv_nsec != nst.st_mtim.tv_nsec {
            changes.setRoot(nst)
        }
        try compareDir(.root, oldFD: oldFD, newFD: changes.newRootFD, changes: changes, compareContents: compareContents)
        try changes.completeHardlinkGroups()
    }

    private static func compareDir(_ dir: EntryPath, oldFD: Int32?, newFD: Int32, changes: ChangeSet, compareContents: Bool) throws(LayerError) {
        let newNames = try FS.listDir(newFD).sorted { $0.lexicographicallyPrecedes($1) }
        var oldNames: [[UInt8]] = []
        if let oldFD { oldNames = try FS.listDir(oldFD).sorted { $0.lexicographicallyPrecedes($1) } }

        var i = 0
        var j = 0
        while i < oldNames.count || j < newNames.count {
            let takeOld: Bool, takeNew: Bool
            if i >= oldNames.count { takeOld = false; takeNew = true }
            else if j >= newNames.count { takeOld = true; takeNew = false }
            else if oldNames[i] == newNames[j] { takeOld = true; takeNew = true }
            else if oldNames[i].lexicographicallyPrecedes(newNames[j]) { takeOld = true; takeNew = false }
            else { takeOld = false; takeNew = true }

            if takeOld && !takeNew {
                try changes.addWhiteout(dir.appending(oldNames[i]))
                i += 1
                continue
            }
            let name = newNames[j][...]
            let path = dir.appending(name)
            var nst = stat()
            guard FS.lstatInto(newFD, name, &nst) else {
                throw .system(Errno(rawValue: errno), entry: path.description, "cannot stat")
            }
            noteInode(path, nst, changes)
            if takeOld, let oldFD {
                var ost = stat()
                let oldExists = FS.lstatInto(oldFD, name, &ost)
                if oldExists && FS.isDir(ost) && FS.isDir(nst) {
                    if try metadataDiffers(ost, nst, oldFD: oldFD, newFD: newFD, name: name, path: path, policy: changes.xattrPolicy) {
                        try changes.addNode(path, st: nst, dirFD: newFD)
                    }
                    let o = FS.openDirBeneath(oldFD, name)
                    let n = FS.openDirBeneath(newFD, name)
                    defer { if o >= 0 { close(o) }; if n >= 0 { close(n) } }
                    guard o >= 0, n >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open directory") }
                    try compareDir(path, oldFD: o, newFD: n, changes: changes, compareContents: compareContents)
                } else {
                    var changed = !oldExists || FS.fileType(ost) != FS.fileType(nst)
                    if !changed {
                        changed = try metadataDiffers(ost, nst, oldFD: oldFD, newFD: newFD, name: name, path: path, policy: changes.xattrPolicy)
                    }
                    if !changed {
                        changed = try contentDiffers(ost, nst, oldFD: oldFD, newFD: newFD, name: name, path: path, always: compareContents)
                    }
                    if changed { try addTree(path, st: nst, dirFD: newFD, changes: changes) }
                }
                i += 1
                j += 1
            } else {
                try addTree(path, st: nst, dirFD: newFD, changes: changes)
                j += 1
            }
        }
    }

    /// Adds an entry of the new tree and, for a dir, everything below it.
    private static func addTree(_ path: EntryPath, st: stat, dirFD: Int32, changes: ChangeSet) throws(LayerError) {
        if FS.fileType(st) == mode_t(LK_S_IFSOCK) {
            changes.warn("entry \"\(path)\": socket skipped (a tar layer cannot hold sockets)")
            return
        }
        try changes.addNode(path, st: st, dirFD: dirFD)
        guard FS.isDir(st) else { return }
        let fd = FS.openDirBeneath(dirFD, path.name)
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open directory") }
        defer { close(fd) }
        for name in try FS.listDir(fd).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            var child = stat()
            let childPath = path.appending(name)
            guard FS.lstatInto(fd, name[...], &child) else {
                throw .system(Errno(rawValue: errno), entry: childPath.description, "cannot stat")
            }
            noteInode(childPath, child, changes)
            try addTree(childPath, st: child, dirFD: fd, changes: changes)
        }
    }

    private static func noteInode(_ path: EntryPath, _ st: stat, _ changes: ChangeSet) {
        if st.st_nlink > 1 && !FS.isDir(st) {
            changes.inodeNames[ChangeSet.InodeKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)), default: []].append(path)
        }
    }

    private static func metadataDiffers(_ a: stat, _ b: stat, oldFD: Int32, newFD: Int32, name: ArraySlice<UInt8>,
                                        path: EntryPath, policy: ApplyOptions) throws(LayerError) -> Bool {
        if FS.fileType(a) != FS.fileType(b) { return true }
        if a.st_mode & 0o7777 != b.st_mode & 0o7777 || a.st_uid != b.st_uid || a.st_gid != b.st_gid { return true }
        let type = FS.fileType(a)
        if type != mode_t(LK_S_IFDIR) {
            if a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec { return true }
        }
        if type == mode_t(LK_S_IFREG) {
            if a.st_size != b.st_size || a.st_nlink != b.st_nlink { return true }
        } else if type == mode_t(LK_S_IFCHR) || type == mode_t(LK_S_IFBLK) {
            if a.st_rdev != b.st_rdev { return true }
        } else if type == mode_t(LK_S_IFLNK) {
            if try ChangeSet.readLink(oldFD, name, path) != ChangeSet.readLink(newFD, name, path) { return true }
        }
        let ax = ChangeSet.xattrs(oldFD, name, policy: policy)
        let bx = ChangeSet.xattrs(newFD, name, policy: policy)
        if ax.count != bx.count { return true }
        for (x, y) in zip(ax, bx) where x.0 != y.0 || x.1 != y.1 { return true }
        return false
    }

    private static func contentDiffers(_ a: stat, _ b: stat, oldFD: Int32, newFD: Int32, name: ArraySlice<UInt8>,
                                       path: EntryPath, always: Bool) throws(LayerError) -> Bool {
        guard FS.fileType(a) == mode_t(LK_S_IFREG), a.st_size > 0 else { return false }
        guard always || b.st_mtim.tv_nsec == 0 else { return false }
        if a.st_dev == b.st_dev && a.st_ino == b.st_ino { return false }
        let fa = withCString(name) { openat(oldFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        let fb = withCString(name) { openat(newFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        defer { if fa >= 0 { close(fa) }; if fb >= 0 { close(fb) } }
        guard fa >= 0, fb >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open to compare") }
        let size = 1 << 16
        let ba = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        let bb = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { ba.deallocate(); bb.deallocate() }
        while true {
            let na = read(fa, ba, size)
            let nb = read(fb, bb, size)
            if na < 0 || nb < 0 { throw .system(Errno(rawValue: errno), entry: path.description, "cannot read to compare") }
            if na != nb { return true }
            if na == 0 { return false }
            if memcmp(ba, bb, na) != 0 { return true }
        }
    }

    // MARK: - Upper dirs

    /// The kind of upper dir being read.
    enum UpperFormat { case overlay, aufs }

    /// Walks an upper dir alone: every entry in it is a change; a char device 0/0 (overlay) or a
    /// `.wh.NAME` file (aufs) is a deletion; an opaque xattr or `.wh..wh..opq` marks an opaque dir.
    /// Uppers that use overlayfs's redirect_dir or metacopy cannot be read alone and are refused.
    static func upper(changes: ChangeSet) throws(LayerError) {
        try walkUpper(.root, fd: changes.newRootFD, changes: changes)
        try changes.completeHardlinkGroups()
    }

    static let overlayXattrNamespaces = ["trusted.overlay.", "user.overlay."]

    private static func walkUpper(_ dir: EntryPath, fd: Int32, changes: ChangeSet) throws(LayerError) {
        for nameArray in try FS.listDir(fd).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let name = nameArray[...]
            let path = dir.appending(name)
            if name.starts(with: ApplyEngine.whiteoutPrefix) {
                if name.elementsEqual(ApplyEngine.opaqueMarker) {
                    try changes.addOpaque(dir)
                } else if !name.starts(with: ApplyEngine.metaPrefix) {
                    try changes.addWhiteout(dir.appending(name.dropFirst(ApplyEngine.whiteoutPrefix.count)))
                }
                continue
            }
            var st = stat()
            guard FS.lstatInto(fd, name, &st) else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot stat") }
            let type = FS.fileType(st)
            if type == mode_t(LK_S_IFCHR) && st.st_rdev == 0 {
                try changes.addWhiteout(path)
                continue
            }
            let xattrs = ChangeSet.allXattrs(fd, name)
            for (key, _) in xattrs {
                for ns in overlayXattrNamespaces where key.hasPrefix(ns) {
                    let what = key.dropFirst(ns.count)
                    if what == "redirect" || what == "metacopy" {
                        throw LayerError(.invalidEntry, entry: path.description,
                                         "the upper dir uses overlayfs \(what == "redirect" ? "redirect_dir" : "metacopy") (\(key)); it cannot be diffed without its lower layers: diff the mounted tree against the lower tree instead")
                    }
                }
            }
            if type == mode_t(LK_S_IFSOCK) {
                changes.warn("entry \"\(path)\": socket skipped (a tar layer cannot hold sockets)")
                continue
            }
            noteInode(path, st, changes)
            try changes.addNode(path, st: st, dirFD: fd)
            if type == mode_t(LK_S_IFDIR) {
                if xattrs.contains(where: { ($0.0 == "trusted.overlay.opaque" || $0.0 == "user.overlay.opaque") && $0.1 == [UInt8(ascii: "y")] }) {
                    try changes.addOpaque(path)
                }
                let child = FS.openDirBeneath(fd, name)
                guard child >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open directory") }
                defer { close(child) }
                try walkUpper(path, fd: child, changes: changes)
            }
        }
    }
}
