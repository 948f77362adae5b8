import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The changes between two states of a tree, ready to be written in a deterministic order:
/// dir by dir, the opaque marker first, then whiteouts, then entries, each sorted by name;
/// every changed entry's parents are included with their metadata.
final class ChangeSet {
    private(set) var byParent: [EntryPath: [DiffItem]] = [:]
    private var included = Set<EntryPath>()
    private var opaqueDirs = Set<EntryPath>()
    /// Names of each multiply-linked file of the new tree, to emit whole hardlink groups.
    var inodeNames: [InodeKey: [EntryPath]] = [:]
    private(set) var warnings: [String] = []
    let newRootFD: Int32
    /// The new tree's real absolute path: xattrs are read by path (a path lookup costs a quarter
    /// of one through /proc/self/fd, which matters when every entry of two trees is compared).
    let newRootPath: [UInt8]
    let xattrPolicy: XattrPolicy

    init(newRootFD: Int32, xattrPolicy: XattrPolicy) {
        self.newRootFD = newRootFD
        self.newRootPath = FileSystem.path(of: newRootFD)
        self.xattrPolicy = xattrPolicy
    }

    /// The absolute path of an entry below a root given by its real path.
    static func absolute(_ root: [UInt8], _ path: EntryPath) -> [UInt8] {
        var p = root
        p.append(FileSystem.slash)
        p.append(contentsOf: path.bytes)
        return p
    }

    var count: Int { byParent.values.reduce(0) { $0 + $1.count } }

    func warn(_ message: String) { warnings.append(message) }

    /// The root dir's own entry (`./`), when its metadata changed.
    private(set) var rootItem: DiffItem?

    func setRoot(_ st: stat) {
        let xattrs = Xattrs.all(atPath: newRootPath.isEmpty ? [FileSystem.slash] : newRootPath).filter { xattrPolicy.carries($0.name) }
        rootItem = DiffItem(kind: .node, path: .root, st: st, xattrs: xattrs)
    }

    /// Adds an entry of the new tree (and its parents).
    func addNode(_ path: EntryPath, st: stat, dirFD: Int32) throws(LayerError) {
        guard included.insert(path).inserted else { return }
        var item = DiffItem(kind: .node, path: path, st: st)
        if FileSystem.isSymlink(st) {
            do throws(Errno) { item.linkTarget = try FileSystem.readLink(dirFD, path.name) } catch {
                throw .system(error, entry: path.description, "cannot read symlink")
            }
        }
        // xattrs are read when the entry is written (through the open fd for files: cheaper).
        try ensureParents(of: path)
        byParent[path.parent, default: []].append(item)
    }

    /// Adds an item as `StreamingWalker` finds it (a node with its link target already read).
    func add(_ item: DiffItem) throws(LayerError) {
        switch item.kind {
        case .whiteout: try addWhiteout(item.path)
        case .opaque: try addOpaque(item.path)
        case .node:
            guard included.insert(item.path).inserted else { return }
            if item.st.st_nlink > 1 && !FileSystem.isDirectory(item.st) {
                inodeNames[InodeKey(item.st), default: []].append(item.path)
            }
            try ensureParents(of: item.path)
            var stored = item
            stored.parentFD = -1
            byParent[item.path.parent, default: []].append(stored)
        }
    }

    func addWhiteout(_ path: EntryPath) throws(LayerError) {
        try ensureParents(of: path)
        byParent[path.parent, default: []].append(DiffItem(kind: .whiteout, path: path))
    }

    func addOpaque(_ dir: EntryPath) throws(LayerError) {
        guard opaqueDirs.insert(dir).inserted else { return }
        try ensureParents(of: dir.appending(LayerFormat.opaqueMarker))
        byParent[dir, default: []].append(DiffItem(kind: .opaque, path: dir))
    }

    /// Adds the parents of `path` not in the set yet, top down, with their metadata in the new tree.
    private func ensureParents(of path: EntryPath) throws(LayerError) {
        var missing = [EntryPath]()
        var parent = path.parent
        while !parent.isRoot && !included.contains(parent) {
            missing.append(parent)
            parent = parent.parent
        }
        for dir in missing.reversed() {
            included.insert(dir)
            var st = stat()
            let rc = dir.withCString { fstatat(newRootFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
            guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: dir.description, "cannot stat parent dir") }
            byParent[dir.parent, default: []].append(DiffItem(kind: .node, path: dir, st: st))
        }
    }

    /// After the walk: every name of a multiply-linked file joins the layer when one name is in it,
    /// so applying the layer rebuilds the same hardlink group.
    func completeHardlinkGroups() throws(LayerError) {
        for (_, names) in inodeNames where names.count > 1 && names.contains(where: { included.contains($0) }) {
            for path in names where !included.contains(path) {
                let parentFD = path.parent.isRoot ? newRootFD : FileSystem.openBeneath(newRootFD, path.parent.bytes)
                guard parentFD >= 0 else { continue }
                defer { if parentFD != newRootFD { close(parentFD) } }
                guard let st = FileSystem.lstat(parentFD, path.name) else { continue }
                try addNode(path, st: st, dirFD: parentFD)
            }
        }
    }

    /// The items in layer order (see the type's description), without recursion.
    func ordered() -> [DiffItem] {
        var out = [DiffItem]()
        out.reserveCapacity(count + 1)
        if let rootItem { out.append(rootItem) }
        func sortedItems(_ dir: EntryPath) -> [DiffItem] {
            guard let items = byParent[dir] else { return [] }
            return items.sorted { a, b in
                let ra = a.kind == .opaque ? 0 : a.kind == .whiteout ? 1 : 2
                let rb = b.kind == .opaque ? 0 : b.kind == .whiteout ? 1 : 2
                if ra != rb { return ra < rb }
                return a.path.name.lexicographicallyPrecedes(b.path.name)
            }
        }
        // A stack of each open dir's items still to write.
        var stack: [(items: [DiffItem], next: Int)] = [(sortedItems(.root), 0)]
        while !stack.isEmpty {
            let top = stack.count - 1
            guard stack[top].next < stack[top].items.count else { stack.removeLast(); continue }
            let item = stack[top].items[stack[top].next]
            stack[top].next += 1
            out.append(item)
            if item.kind == .node && FileSystem.isDirectory(item.st) { stack.append((sortedItems(item.path), 0)) }
        }
        return out
    }
}
