import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Finds what changed between two full trees: OLD and NEW are walked in step, dir by dir (names
/// sorted). A name that is a regular file on both sides (most of a tree) goes to the
/// `FilePairComparer`, which decides on the second core while the walk goes on (stat, xattrs, and
/// the bytes where the stat cannot tell); the walk stats and compares the rest itself.
///
/// The walk is iterative: two `DirectoryCursor`s move down and up together, so a tree of any
/// depth is walked with two open dirs and a list of pending names per level.
struct TreeComparer {
    private let regularType = UInt8(DT_REG)
    let oldFD: Int32
    let changes: ChangeSet
    let compareContents: Bool

    /// Records the root dir's own entry when its metadata (or mtime) differs between the trees.
    static func compareRoots(oldFD: Int32, changes: ChangeSet) throws(LayerError) {
        guard let ost = FileSystem.attributes(of: oldFD), let nst = FileSystem.attributes(of: changes.newRootFD) else {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot stat the root")
        }
        let comparer = TreeComparer(oldFD: oldFD, changes: changes, compareContents: false)
        if try comparer.metadataDiffers(ost, nst, oldDir: oldFD, newDir: changes.newRootFD, name: FileSystem.dot, path: .root, oldRoot: [])
            || ost.st_mtim.tv_sec != nst.st_mtim.tv_sec || ost.st_mtim.tv_nsec != nst.st_mtim.tv_nsec {
            changes.setRoot(nst)
        }
    }

    /// Records the root's own entry of an upper dir when its owner, mode or xattrs differ from
    /// those of the lower layer's root (its mtime changes with every name made at the root, so it
    /// does not count).
    static func compareUpperRoot(lowerRoot: String, changes: ChangeSet) throws(LayerError) {
        let lowerFD = open(lowerRoot, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard lowerFD >= 0 else { throw LayerError(.input, layer: lowerRoot, "cannot open directory: \(Errno(rawValue: errno).description)") }
        defer { close(lowerFD) }
        guard let lower = FileSystem.attributes(of: lowerFD), let upper = FileSystem.attributes(of: changes.newRootFD) else {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot stat the root")
        }
        let comparer = TreeComparer(oldFD: lowerFD, changes: changes, compareContents: false)
        if try comparer.metadataDiffers(lower, upper, oldDir: lowerFD, newDir: changes.newRootFD, name: FileSystem.dot, path: .root, oldRoot: []) {
            changes.setRoot(upper)
        }
    }

    /// Walks both trees and records every change in `changes`.
    func run() throws(LayerError) {
        try Self.compareRoots(oldFD: oldFD, changes: changes)
        let oldRoot = FileSystem.path(of: oldFD)
        let comparer = FilePairComparer(oldFD: oldFD, newFD: changes.newRootFD, oldRootPath: oldRoot,
                                        newRootPath: changes.newRootPath, xattrPolicy: changes.xattrPolicy,
                                        compareContents: compareContents)
        comparer.start()
        var walkError: LayerError?
        do throws(LayerError) { try walk(oldRoot: oldRoot, comparer: comparer) } catch { walkError = error }
        let compared = comparer.finish()
        if let walkError { throw walkError }
        var parent = OpenDirBelow(rootFD: changes.newRootFD)
        defer { parent.close() }
        for (item, result) in compared {
            let nst = result.st
            switch result.outcome {
            case .same:
                if nst.st_nlink > 1 { noteInode(item.path, nst) }   // a path is built only for a hardlink
            case .changed:
                noteInode(item.path, nst)
                try changes.addNode(item.path, st: nst, dirFD: try Self.opened(&parent, item.dir))
            case .unreadable:
                throw LayerError(.input, entry: item.path.description, "cannot read to compare contents")
            case .recheck:
                try recheck(item.path, oldRoot: oldRoot, parent: &parent)
            }
        }
        try changes.completeHardlinkGroups()
    }

    /// A pair the comparer could not settle (the tree changed under the walk): looked at again,
    /// the slow way, by name.
    private func recheck(_ path: EntryPath, oldRoot: [UInt8], parent: inout OpenDirBelow) throws(LayerError) {
        let newDir = try Self.opened(&parent, path.parent)
        let oldDir = path.parent.isRoot ? oldFD : FileSystem.openBeneath(oldFD, path.parent.bytes)
        guard oldDir >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open parent dir") }
        defer { if oldDir != oldFD { close(oldDir) } }
        let name = Array(path.name)
        guard let nst = FileSystem.lstat(newDir, name) else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot stat") }
        noteInode(path, nst)
        guard let ost = FileSystem.lstat(oldDir, name),
              try !metadataDiffers(ost, nst, oldDir: oldDir, newDir: newDir, name: name, path: path, oldRoot: oldRoot) else {
            try addTree(path, st: nst, dirFD: newDir)
            return
        }
        guard needsContentCompare(ost, nst) else { return }
        var files = OpenPair()
        defer { files.close() }
        guard files.open(oldDir, newDir, name) else { throw LayerError(.input, entry: path.description, "cannot read to compare contents") }
        let buffers = (UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64),
                       UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64))
        defer { buffers.0.deallocate(); buffers.1.deallocate() }
        switch FilePairComparer.sameBytes(files.old, files.new, size: Int64(nst.st_size), buffers: buffers) {
        case 0: return
        case 1: try changes.addNode(path, st: nst, dirFD: newDir)
        default: throw LayerError(.input, entry: path.description, "cannot read to compare contents")
        }
    }

    /// The new tree's dir of a changed file (kept open for the next one), or an error naming it.
    private static func opened(_ dir: inout OpenDirBelow, _ path: EntryPath) throws(LayerError) -> Int32 {
        let fd = dir.open(path)
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open parent dir") }
        return fd
    }

    /// One dir being compared: both sides' entries, sorted by name, and how far the merge has come.
    private struct Level {
        let dir: EntryPath
        let old: [FileSystem.DirectoryEntry]
        let new: [FileSystem.DirectoryEntry]
        var i = 0
        var j = 0
    }

    private func walk(oldRoot: [UInt8], comparer: FilePairComparer) throws(LayerError) {
        let oldCursor: DirectoryCursor, newCursor: DirectoryCursor
        do throws(Errno) {
            oldCursor = try DirectoryCursor(root: oldFD)
            newCursor = try DirectoryCursor(root: changes.newRootFD)
        } catch { throw .system(error, entry: nil, "cannot open the trees") }
        var levels = [try level(.root, oldCursor.fd, newCursor.fd)]
        while !levels.isEmpty {
            let top = levels.count - 1
            let l = levels[top]
            if l.i >= l.old.count && l.j >= l.new.count {
                levels.removeLast()
                if !levels.isEmpty {
                    do throws(Errno) {
                        try oldCursor.ascend()
                        try newCursor.ascend()
                    } catch { throw .system(error, entry: l.dir.description, "the tree changed during the walk") }
                }
                continue
            }
            let takeOld: Bool, takeNew: Bool
            if l.i >= l.old.count { (takeOld, takeNew) = (false, true) }
            else if l.j >= l.new.count { (takeOld, takeNew) = (true, false) }
            else if l.old[l.i].name == l.new[l.j].name { (takeOld, takeNew) = (true, true) }
            else if l.old[l.i].name.lexicographicallyPrecedes(l.new[l.j].name) { (takeOld, takeNew) = (true, false) }
            else { (takeOld, takeNew) = (false, true) }

            if takeOld && !takeNew {
                try changes.addWhiteout(l.dir.appending(l.old[l.i].name))
                levels[top].i += 1
                continue
            }
            let name = l.new[l.j].name
            // Two regular files (by their dirs' entry types): the comparer decides.
            let bothRegular = takeOld && l.old[l.i].type == regularType && l.new[l.j].type == regularType
            levels[top].j += 1
            if takeOld { levels[top].i += 1 }
            if bothRegular {
                comparer.add(PendingPair(dir: l.dir, name: name))
                continue
            }
            let path = l.dir.appending(name)
            let newDir = newCursor.fd, oldDir = oldCursor.fd
            guard let nst = FileSystem.lstat(newDir, name) else {
                throw .system(Errno(rawValue: errno), entry: path.description, "cannot stat")
            }
            guard takeOld, let ost = FileSystem.lstat(oldDir, name) else {
                noteInode(path, nst)
                try addTree(path, st: nst, dirFD: newDir)
                continue
            }
            if FileSystem.isRegularFile(ost) && FileSystem.isRegularFile(nst) {
                comparer.add(PendingPair(dir: l.dir, name: name))   // a file system that gives no entry types
                continue
            }
            noteInode(path, nst)
            if FileSystem.isDirectory(ost) && FileSystem.isDirectory(nst) {
                if try metadataDiffers(ost, nst, oldDir: oldDir, newDir: newDir, name: name, path: path, oldRoot: oldRoot) {
                    try changes.addNode(path, st: nst, dirFD: newDir)
                }
                do throws(Errno) {
                    try oldCursor.descend(name)
                    try newCursor.descend(name)
                } catch { throw .system(error, entry: path.description, "cannot open directory") }
                levels.append(try level(path, oldCursor.fd, newCursor.fd))
                continue
            }
            var changed = FileSystem.fileType(ost) != FileSystem.fileType(nst)
            if !changed { changed = try metadataDiffers(ost, nst, oldDir: oldDir, newDir: newDir, name: name, path: path, oldRoot: oldRoot) }
            if changed { try addTree(path, st: nst, dirFD: newDir) }
        }
    }

    private func level(_ dir: EntryPath, _ oldDir: Int32, _ newDir: Int32) throws(LayerError) -> Level {
        do throws(Errno) {
            return Level(dir: dir, old: try FileSystem.sortedEntries(of: oldDir), new: try FileSystem.sortedEntries(of: newDir))
        } catch { throw .system(error, entry: dir.description, "cannot read directory") }
    }

    /// Adds an entry of the new tree and, for a dir, everything below it.
    private func addTree(_ path: EntryPath, st: stat, dirFD: Int32) throws(LayerError) {
        if FileSystem.fileType(st) == mode_t(LK_S_IFSOCK) {
            changes.warn("entry \"\(path)\": socket skipped (a tar layer cannot hold sockets)")
            return
        }
        try changes.addNode(path, st: st, dirFD: dirFD)
        guard FileSystem.isDirectory(st) else { return }
        let fd: Int32
        do throws(Errno) { fd = try FileSystem.openDirectory(dirFD, path.name) } catch {
            throw .system(error, entry: path.description, "cannot open directory")
        }
        defer { close(fd) }
        let changes = self.changes
        try StreamingWalker.contents(of: path, fd: fd, rootPath: changes.newRootPath,
                                     emit: { (item) throws(LayerError) in try changes.add(item) }, warn: changes.warn)
    }

    private func noteInode(_ path: EntryPath, _ st: stat) {
        if st.st_nlink > 1 && !FileSystem.isDirectory(st) {
            changes.inodeNames[InodeKey(st), default: []].append(path)
        }
    }

    /// Whether two entries of the same name differ in anything but their contents. For the root,
    /// `oldDir`/`newDir` are the roots themselves.
    fileprivate func metadataDiffers(_ a: stat, _ b: stat, oldDir: Int32, newDir: Int32, name: [UInt8],
                                     path: EntryPath, oldRoot: [UInt8]) throws(LayerError) -> Bool {
        if FileSystem.fileType(a) != FileSystem.fileType(b) { return true }
        if a.st_mode & 0o7777 != b.st_mode & 0o7777 || a.st_uid != b.st_uid || a.st_gid != b.st_gid { return true }
        let type = FileSystem.fileType(a)
        if type != mode_t(LK_S_IFDIR) {
            if a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec { return true }
        }
        if type == mode_t(LK_S_IFREG) {
            if a.st_size != b.st_size || a.st_nlink != b.st_nlink { return true }
        } else if type == mode_t(LK_S_IFCHR) || type == mode_t(LK_S_IFBLK) {
            if a.st_rdev != b.st_rdev { return true }
        } else if type == mode_t(LK_S_IFLNK) {
            do throws(Errno) {
                if try FileSystem.readLink(oldDir, name) != FileSystem.readLink(newDir, name) { return true }
            } catch { throw .system(error, entry: path.description, "cannot read symlink") }
        }
        let policy = changes.xattrPolicy
        let ax: [Xattrs.Attribute], bx: [Xattrs.Attribute]
        if path.isRoot {
            ax = Xattrs.all(fd: oldDir)
            bx = Xattrs.all(fd: newDir)
        } else {
            ax = Xattrs.all(oldDir, name, absolute: ChangeSet.absolute(oldRoot, path))
            bx = Xattrs.all(newDir, name, absolute: ChangeSet.absolute(changes.newRootPath, path))
        }
        let carriedA = ax.filter { policy.carries($0.name) }, carriedB = bx.filter { policy.carries($0.name) }
        if carriedA.count != carriedB.count { return true }
        for (x, y) in zip(carriedA, carriedB) where x.name != y.name || x.value != y.value { return true }
        return false
    }

    private func needsContentCompare(_ a: stat, _ b: stat) -> Bool {
        FilePairComparer.onlyBytesCanTell(a, b, compareContents: compareContents)
    }
}
