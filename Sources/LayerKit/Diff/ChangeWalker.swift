import CLayerSys
import Foundation
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
    /// Records the root dir's own entry when its metadata (or mtime) differs between the trees.
    static func compareRoots(oldFD: Int32, changes: ChangeSet) throws(LayerError) {
        var ost = stat(), nst = stat()
        fstat(oldFD, &ost)
        fstat(changes.newRootFD, &nst)
        let dot = Array(".".utf8)[...]
        let oldRoot = ApplyEngine.fdPath(oldFD)
        if try metadataDiffers(ost, nst, oldFD: oldFD, newFD: changes.newRootFD, name: dot, path: .root, oldRoot: oldRoot, newRoot: changes.newRootPath, policy: changes.xattrPolicy)
            || ost.st_mtim.tv_sec != nst.st_mtim.tv_sec || ost.st_mtim.tv_nsec != nst.st_mtim.tv_nsec {
            changes.setRoot(nst)
        }
    }

    static func twoTrees(oldFD: Int32, changes: ChangeSet, compareContents: Bool) throws(LayerError) {
        try compareRoots(oldFD: oldFD, changes: changes)
        let oldRoot = ApplyEngine.fdPath(oldFD)
        // Files that only their bytes can judge are compared on the other core while the walk goes on.
        let comparer = ContentComparer(oldFD: oldFD, newFD: changes.newRootFD)
        comparer.start()
        var walkError: LayerError?
        do throws(LayerError) {
            try compareDir(.root, oldFD: oldFD, newFD: changes.newRootFD, oldRoot: oldRoot, changes: changes,
                           compareContents: compareContents, comparer: comparer)
        } catch {
            walkError = error
        }
        let compared = comparer.finish()
        if let walkError { throw walkError }
        let newFD = changes.newRootFD
        for (item, result) in compared where result != 0 {
            if result < 0 { throw LayerError(.input, entry: item.path.description, "cannot read to compare contents") }
            let parentFD = item.path.parent.isRoot ? newFD : item.path.parent.withCString {
                lk_openat2(newFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, UInt64(LK_RESOLVE_BENEATH | LK_RESOLVE_NO_SYMLINKS))
            }
            guard parentFD >= 0 else { throw .system(Errno(rawValue: errno), entry: item.path.description, "cannot open parent dir") }
            defer { if parentFD != newFD { close(parentFD) } }
            try changes.addNode(item.path, st: item.st, dirFD: parentFD)
        }
        try changes.completeHardlinkGroups()
    }

    /// A file whose metadata cannot tell whether it changed.
    struct PendingCompare {
        let path: EntryPath
        let st: stat
    }

    /// Compares file contents on a second thread while the walk feeds it; the walking thread
    /// joins in once the walk is done.
    final class ContentComparer: @unchecked Sendable {
        private let lock = NSCondition()
        private var items: [PendingCompare] = []
        private var results: [Int8] = []
        private var next = 0
        private var adding = true
        private var busy = 0
        private var workerDone = false
        let oldFD: Int32
        let newFD: Int32

        init(oldFD: Int32, newFD: Int32) {
            self.oldFD = oldFD
            self.newFD = newFD
        }

        func add(_ item: PendingCompare) {
            lock.lock()
            items.append(item)
            results.append(0)
            if items.count - next >= 32 { lock.signal() }
            lock.unlock()
        }

        func start() {
            let t = Thread { [self] in
                self.work()
                self.lock.lock()
                self.workerDone = true
                self.lock.broadcast()
                self.lock.unlock()
            }
            t.name = "layerkit-compare"
            t.start()
        }

        private func claim() -> (Int, [PendingCompare])? {
            lock.lock()
            defer { lock.unlock() }
            while adding && items.count - next < 32 { lock.wait() }
            guard next < items.count else { return nil }
            let end = min(next + 64, items.count)
            let batch = Array(items[next..<end])
            let start = next
            next = end
            busy += 1
            return (start, batch)
        }

        private func work() {
            let a = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64)
            let b = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64)
            defer { a.deallocate(); b.deallocate() }
            while let (start, batch) = claim() {
                let r = batch.map { ChangeWalker.sameBytes($0, oldFD: oldFD, newFD: newFD, buffers: (a, b)) }
                lock.lock()
                for (i, v) in r.enumerated() { results[start + i] = v }
                busy -= 1
                lock.broadcast()
                lock.unlock()
            }
        }

        /// Ends the feeding, helps with what is left, and returns every item with its result
        /// (0 same, 1 differs, -1 unreadable).
        func finish() -> [(PendingCompare, Int8)] {
            lock.lock()
            adding = false
            lock.broadcast()
            lock.unlock()
            work()
            lock.lock()
            while busy > 0 || !workerDone { lock.wait() }
            let out = Array(zip(items, results))
            lock.unlock()
            return out
        }
    }

    /// 0 when both files hold the same bytes, 1 when not, -1 on an error. Reads exactly the known
    /// size (one read per small file, no read for the end).
    static func sameBytes(_ item: PendingCompare, oldFD: Int32, newFD: Int32,
                                  buffers: (UnsafeMutableRawPointer, UnsafeMutableRawPointer)) -> Int8 {
        let how = UInt64(LK_RESOLVE_BENEATH | LK_RESOLVE_NO_SYMLINKS)
        let flags = UInt64(O_RDONLY | O_NOFOLLOW | O_CLOEXEC | 0o1000000 /* O_NOATIME */)
        var fa = item.path.withCString { lk_openat2(oldFD, $0, flags, 0, how) }
        if fa < 0 && errno == EPERM { fa = item.path.withCString { lk_openat2(oldFD, $0, flags & ~UInt64(0o1000000 /* O_NOATIME */), 0, how) } }
        var fb = item.path.withCString { lk_openat2(newFD, $0, flags, 0, how) }
        if fb < 0 && errno == EPERM { fb = item.path.withCString { lk_openat2(newFD, $0, flags & ~UInt64(0o1000000 /* O_NOATIME */), 0, how) } }
        defer { if fa >= 0 { close(fa) }; if fb >= 0 { close(fb) } }
        guard fa >= 0, fb >= 0 else { return -1 }
        var offset: Int64 = 0
        let size = Int64(item.st.st_size)
        while offset < size {
            let want = Int(min(Int64(1 << 16), size - offset))
            let na = pread(fa, buffers.0, want, off_t(offset))
            let nb = pread(fb, buffers.1, want, off_t(offset))
            if na < 0 || nb < 0 { return -1 }
            if na != nb || na == 0 { return 1 }
            if memcmp(buffers.0, buffers.1, na) != 0 { return 1 }
            offset += Int64(na)
        }
        return 0
    }

    private static func compareDir(_ dir: EntryPath, oldFD: Int32?, newFD: Int32, oldRoot: [UInt8], changes: ChangeSet,
                                   compareContents: Bool, comparer: ContentComparer) throws(LayerError) {
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
                    if try metadataDiffers(ost, nst, oldFD: oldFD, newFD: newFD, name: name, path: path, oldRoot: oldRoot, newRoot: changes.newRootPath, policy: changes.xattrPolicy) {
                        try changes.addNode(path, st: nst, dirFD: newFD)
                    }
                    let o = FS.openDirBeneath(oldFD, name)
                    let n = FS.openDirBeneath(newFD, name)
                    defer { if o >= 0 { close(o) }; if n >= 0 { close(n) } }
                    guard o >= 0, n >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open directory") }
                    try compareDir(path, oldFD: o, newFD: n, oldRoot: oldRoot, changes: changes,
                                   compareContents: compareContents, comparer: comparer)
                } else {
                    var changed = !oldExists || FS.fileType(ost) != FS.fileType(nst)
                    if !changed {
                        changed = try metadataDiffers(ost, nst, oldFD: oldFD, newFD: newFD, name: name, path: path, oldRoot: oldRoot, newRoot: changes.newRootPath, policy: changes.xattrPolicy)
                    }
                    if changed {
                        try addTree(path, st: nst, dirFD: newFD, changes: changes)
                    } else if needsContentCompare(ost, nst, always: compareContents) {
                        comparer.add(PendingCompare(path: path, st: nst))
                    }
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
        try StreamingWalker.contents(of: path, fd: fd, emit: { (item) throws(LayerError) in try changes.add(item) }, warn: changes.warn)
    }

    private static func noteInode(_ path: EntryPath, _ st: stat, _ changes: ChangeSet) {
        if st.st_nlink > 1 && !FS.isDir(st) {
            changes.inodeNames[ChangeSet.InodeKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)), default: []].append(path)
        }
    }

    private static func metadataDiffers(_ a: stat, _ b: stat, oldFD: Int32, newFD: Int32, name: ArraySlice<UInt8>,
                                        path: EntryPath, oldRoot: [UInt8], newRoot: [UInt8], policy: ApplyOptions) throws(LayerError) -> Bool {
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
        let ax = ChangeSet.xattrs(ChangeSet.absolute(oldRoot, path), policy: policy)
        let bx = ChangeSet.xattrs(ChangeSet.absolute(newRoot, path), policy: policy)
        if ax.count != bx.count { return true }
        for (x, y) in zip(ax, bx) where x.0 != y.0 || x.1 != y.1 { return true }
        return false
    }

    /// Same size and mtime: only the bytes can tell, when the mtime has no sub-second part
    /// (tar-extracted trees) or when asked to always look.
    private static func needsContentCompare(_ a: stat, _ b: stat, always: Bool) -> Bool {
        guard FS.fileType(a) == mode_t(LK_S_IFREG), a.st_size > 0 else { return false }
        guard always || b.st_mtim.tv_nsec == 0 else { return false }
        return !(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
    }

    // MARK: - Upper dirs

    /// The kind of upper dir being read.
    enum UpperFormat { case overlay, aufs }

    /// Walks an upper dir alone: every entry in it is a change; a char device 0/0 (overlay) or a
    /// `.wh.NAME` file (aufs) is a deletion; an opaque xattr or `.wh..wh..opq` marks an opaque dir.
    /// Uppers that use overlayfs's redirect_dir or metacopy cannot be read alone and are refused.
    static func upper(changes: ChangeSet) throws(LayerError) {
        // Every name in an upper dir is a change, so every hardlink group is complete already.
        try StreamingWalker.upper(rootFD: changes.newRootFD, rootPath: changes.newRootPath,
                                  emit: { (item) throws(LayerError) in try changes.add(item) }, warn: changes.warn)
    }

    static let overlayXattrNamespaces = ["trusted.overlay.", "user.overlay."]

    /// An upper entry marked with overlayfs's redirect_dir or metacopy cannot be read alone.
    static func refuseRedirects(_ xattrs: [(String, [UInt8])], path: EntryPath) throws(LayerError) {
        for (key, _) in xattrs {
            for ns in overlayXattrNamespaces where key.hasPrefix(ns) {
                let what = key.dropFirst(ns.count)
                if what == "redirect" || what == "metacopy" {
                    throw LayerError(.invalidEntry, entry: path.description,
                                     "the upper dir uses overlayfs \(what == "redirect" ? "redirect_dir" : "metacopy") (\(key)); it cannot be diffed without its lower layers: diff the mounted tree against the lower tree instead")
                }
            }
        }
    }

    /// Whether a dir's xattrs mark it opaque (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`).
    static func isOpaque(_ xattrs: [(String, [UInt8])]) -> Bool {
        xattrs.contains { ($0.0 == "trusted.overlay.opaque" || $0.0 == "user.overlay.opaque") && $0.1 == [UInt8(ascii: "y")] }
    }
}
