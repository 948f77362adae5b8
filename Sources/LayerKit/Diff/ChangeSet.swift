import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One thing a layer will say: an entry (with the metadata it has in the new tree), a whiteout
/// of a name, or an opaque marker on a dir.
struct DiffItem {
    enum Kind { case node, whiteout, opaque }
    var kind: Kind
    var path: EntryPath
    var st = stat()
    var linkTarget: [UInt8] = []
    /// Only for the root item; the others' are read when written.
    var xattrs: [(String, [UInt8])] = []
}

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
    let xattrPolicy: ApplyOptions

    struct InodeKey: Hashable { let dev: UInt64; let ino: UInt64 }

    init(newRootFD: Int32, xattrPolicy: ApplyOptions) {
        self.newRootFD = newRootFD
        self.newRootPath = ApplyEngine.fdPath(newRootFD)
        self.xattrPolicy = xattrPolicy
    }

    /// The absolute path of an entry below a root given by its real path.
    static func absolute(_ root: [UInt8], _ path: EntryPath) -> [UInt8] {
        var p = root
        p.append(UInt8(ascii: "/"))
        p.append(contentsOf: path.bytes)
        return p
    }

    var count: Int { byParent.values.reduce(0) { $0 + $1.count } }

    func warn(_ message: String) { warnings.append(message) }

    /// The root dir's own entry (`./`), when its metadata changed.
    private(set) var rootItem: DiffItem?

    func setRoot(_ st: stat) {
        rootItem = DiffItem(kind: .node, path: .root, st: st, xattrs: Self.xattrs(Self.absolute(newRootPath, .root), policy: xattrPolicy))
    }

    /// Adds an entry of the new tree (and its parents).
    func addNode(_ path: EntryPath, st: stat, dirFD: Int32) throws(LayerError) {
        guard included.insert(path).inserted else { return }
        var item = DiffItem(kind: .node, path: path, st: st)
        let name = path.name
        if FS.fileType(st) == mode_t(LK_S_IFLNK) {
            item.linkTarget = try Self.readLink(dirFD, name, path)
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
            if item.st.st_nlink > 1 && !FS.isDir(item.st) {
                inodeNames[InodeKey(dev: UInt64(item.st.st_dev), ino: UInt64(item.st.st_ino)), default: []].append(item.path)
            }
            try ensureParents(of: item.path)
            byParent[item.path.parent, default: []].append(item)
        }
    }

    func addWhiteout(_ path: EntryPath) throws(LayerError) {
        try ensureParents(of: path)
        byParent[path.parent, default: []].append(DiffItem(kind: .whiteout, path: path))
    }

    func addOpaque(_ dir: EntryPath) throws(LayerError) {
        guard opaqueDirs.insert(dir).inserted else { return }
        try ensureParents(of: dir.appending(".wh..wh..opq".utf8))
        byParent[dir, default: []].append(DiffItem(kind: .opaque, path: dir))
    }

    private func ensureParents(of path: EntryPath) throws(LayerError) {
        let parent = path.parent
        if parent.isRoot || included.contains(parent) { return }
        var st = stat()
        let rc = parent.withCString { fstatat(newRootFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
        guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: parent.description, "cannot stat parent dir") }
        let parentFD = parent.parent.isRoot ? newRootFD
            : parent.parent.withCString { lk_openat2(newRootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, UInt64(LK_RESOLVE_BENEATH | LK_RESOLVE_NO_SYMLINKS)) }
        guard parentFD >= 0 else { throw .system(Errno(rawValue: errno), entry: parent.description, "cannot open parent dir") }
        defer { if parentFD != newRootFD { close(parentFD) } }
        try addNode(parent, st: st, dirFD: parentFD)
    }

    /// After the walk: every name of a multiply-linked file joins the layer when one name is in it,
    /// so applying the layer rebuilds the same hardlink group.
    func completeHardlinkGroups() throws(LayerError) {
        for (_, names) in inodeNames where names.count > 1 && names.contains(where: { included.contains($0) }) {
            for path in names where !included.contains(path) {
                var st = stat()
                let parentFD = path.parent.isRoot ? newRootFD
                    : path.parent.withCString { lk_openat2(newRootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, UInt64(LK_RESOLVE_BENEATH | LK_RESOLVE_NO_SYMLINKS)) }
                guard parentFD >= 0 else { continue }
                defer { if parentFD != newRootFD { close(parentFD) } }
                guard FS.lstatInto(parentFD, path.name, &st) else { continue }
                try addNode(path, st: st, dirFD: parentFD)
            }
        }
    }

    /// The items in layer order (see the type's description).
    func ordered() -> [DiffItem] {
        var out = [DiffItem]()
        out.reserveCapacity(count + 1)
        if let rootItem { out.append(rootItem) }
        func visit(_ dir: EntryPath) {
            guard var items = byParent[dir] else { return }
            items.sort { a, b in
                let ra = a.kind == .opaque ? 0 : a.kind == .whiteout ? 1 : 2
                let rb = b.kind == .opaque ? 0 : b.kind == .whiteout ? 1 : 2
                if ra != rb { return ra < rb }
                return a.path.name.lexicographicallyPrecedes(b.path.name)
            }
            for item in items {
                out.append(item)
                if item.kind == .node && FS.isDir(item.st) { visit(item.path) }
            }
        }
        visit(.root)
        return out
    }

    // MARK: - Reading the new tree

    static func readLink(_ dirFD: Int32, _ name: ArraySlice<UInt8>, _ path: EntryPath) throws(LayerError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4097)
        let n = withCString(name) { readlinkat(dirFD, $0, &buffer, 4096) }
        guard n >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot read symlink") }
        return Array(buffer[..<n])
    }

    /// The entry's xattrs that a layer carries (the apply policy: no `trusted.*`, no
    /// `user.overlay.*`, `security.selinux` only when asked), sorted by name.
    static func xattrs(_ absolutePath: [UInt8], policy: ApplyOptions) -> [(String, [UInt8])] {
        allXattrs(absolutePath).filter { policy.appliesXattr($0.0) }
    }

    /// Every xattr of an entry named by its dir's fd, not following symlinks, sorted by name.
    static func allXattrs(_ dirFD: Int32, _ name: ArraySlice<UInt8>) -> [(String, [UInt8])] {
        allXattrs(Array("/proc/self/fd/\(dirFD)/".utf8) + name)
    }

    /// Every xattr of an open file, sorted by name.
    static func allXattrs(fd: Int32) -> [(String, [UInt8])] {
        readXattrs(list: { flistxattr(fd, $0, $1) }, get: { fgetxattr(fd, $0, $1, $2) })
    }

    /// Every xattr of the entry at an absolute path, not following symlinks, sorted by name.
    static func allXattrs(_ pathBytes: [UInt8]) -> [(String, [UInt8])] {
        withCString(pathBytes) { path in
            readXattrs(list: { llistxattr(path, $0, $1) }, get: { lgetxattr(path, $0, $1, $2) })
        }
    }

    /// Lists names, then reads each value, growing the buffers when the kernel says ERANGE.
    private static func readXattrs(list: (UnsafeMutablePointer<CChar>?, Int) -> Int,
                                   get: (String, UnsafeMutableRawPointer?, Int) -> Int) -> [(String, [UInt8])] {
        var names = [CChar](repeating: 0, count: 1024)
        var size = list(&names, names.count)
        if size < 0 && errno == ERANGE {
            let needed = list(nil, 0)
            guard needed > 0 else { return [] }
            names = [CChar](repeating: 0, count: needed)
            size = list(&names, needed)
        }
        guard size > 0 else { return [] }
        var result = [(String, [UInt8])]()
        var start = 0
        for i in 0..<size where names[i] == 0 {
            let key = String(decoding: names[start..<i].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            start = i + 1
            var value = [UInt8](repeating: 0, count: 256)
            var n = get(key, &value, value.count)
            if n < 0 && errno == ERANGE {
                let needed = get(key, nil, 0)
                guard needed >= 0 else { continue }
                value = [UInt8](repeating: 0, count: needed)
                n = get(key, &value, needed)
            }
            guard n >= 0 else { continue }
            result.append((key, Array(value[..<n])))
        }
        return result.sorted { $0.0 < $1.0 }
    }
}

extension FS {
    static func lstatInto(_ dirFD: Int32, _ name: ArraySlice<UInt8>, _ st: inout stat) -> Bool {
        withCString(name) { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
    }

    /// Opens a dir beneath `dirFD` without following any symlink.
    static func openDirBeneath(_ dirFD: Int32, _ name: ArraySlice<UInt8>) -> Int32 {
        withCString(name) { openat(dirFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }
}
