import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// A copy-up union of read-only lower dirs under one writable upper dir, with the semantics of
/// kernel overlayfs (without redirect_dir/metacopy): lookups go through the upper then the lowers
/// (top first); the first write, truncate, metadata or xattr change, or hardlink of a lower entry
/// copies it up (content with holes, metadata, xattrs; parents first; atomically through the
/// work dir); deleting a lower entry leaves a whiteout in the upper.
///
/// Entries are addressed by inode number, as FUSE does: `lookup` hands out numbers that stay the
/// same for the life of the mount across copy-up and rename (the table keeps every name looked
/// up, about 300 bytes each, until it is removed). The upper dir must be written by this union
/// alone while it runs. Every method is safe to call from several threads: one mutex guards the
/// table and the namespace changes; reads and writes go to fds without it, and a file's content
/// is copied up with it released.
///
/// Not supported: RENAME_EXCHANGE and RENAME_WHITEOUT from callers (EINVAL); renaming a dir that
/// has content in a lower layer (EXDEV, as overlayfs without redirect_dir: `mv` copies it); two
/// names of one lower inode are two inodes here (they stay hardlinked below; a copy-up of one
/// breaks the link, as overlayfs without `index` does).
public final class UnionFileSystem: @unchecked Sendable {
    /// The inode number of the union's root (FUSE_ROOT_ID).
    public static let rootInode: UInt64 = 1

    /// Fine-tuning of the union's behaviour.
    public struct Options: Sendable {
        /// The whiteout form; nil probes (overlay form where a 0/0 device can be made).
        public var whiteoutForm: UnionWhiteoutForm?
        /// fsync a copied-up file before it is renamed into the upper, so that it is complete
        /// after a power loss too (a daemon crash never leaves a half file visible either way).
        public var syncCopyUp: Bool
        public init(whiteoutForm: UnionWhiteoutForm? = nil, syncCopyUp: Bool = false) {
            self.whiteoutForm = whiteoutForm
            self.syncCopyUp = syncCopyUp
        }
    }

    let layers: UnionLayerStack
    let options: Options
    let mutex = UnionMutex()
    var nodes: [UInt64: UnionNode] = [:]
    var nextIno: UInt64 = 2
    /// Upper files with several names, by (dev, ino) of the backing file: one node for all names.
    var hardlinks: [HardlinkKey: UnionNode] = [:]
    var tempCounter: UInt64 = 0
    let root: UnionNode
    /// Whether created entries are given the caller's uid/gid (only root can).
    let canChown: Bool

    struct HardlinkKey: Hashable {
        let dev: UInt64
        let ino: UInt64
    }

    /// Opens the layers. `lowers` are top first; `work` must be an empty-or-union-owned dir on
    /// the upper's file system.
    public init(lowers: [String], upper: String, work: String, options: Options = Options()) throws(UnionError) {
        self.layers = try UnionLayerStack(lowers: lowers, upper: upper, work: work, form: options.whiteoutForm)
        self.options = options
        self.canChown = geteuid() == 0
        var dirLayers = [UnionLayerStack.upper]
        if !layers.isOpaque(UnionLayerStack.upper, FileSystem.dot) {
            for i in stride(from: 1, through: layers.lowerCount, by: 1) {
                guard let st = FileSystem.lstat(layers.fds[i], FileSystem.dot), FileSystem.isDirectory(st) else { break }
                dirLayers.append(i)
                if layers.isOpaque(i, FileSystem.dot) { break }
            }
        }
        root = UnionNode(ino: Self.rootInode, parent: nil, name: [], layer: UnionLayerStack.upper,
                         dirLayers: dirLayers, type: mode_t(LK_S_IFDIR))
        root.lookups = 1
        nodes[Self.rootInode] = root
    }

    deinit {
        for node in nodes.values { if let held = node.heldFD { close(held) } }
    }

    /// The whiteout form the upper is written in.
    public var whiteoutForm: UnionWhiteoutForm { layers.form }

    // MARK: Node table (callers hold the mutex)

    func node(_ ino: UInt64, _ operation: String) throws(UnionError) -> UnionNode {
        guard let node = nodes[ino] else { throw UnionError(ESTALE, operation, "#\(ino)") }
        return node
    }

    func linkedPath(_ node: UnionNode, _ operation: String) throws(UnionError) -> [UInt8] {
        guard let path = node.path else { throw UnionError(ENOENT, operation, "#\(node.ino) (removed)") }
        return path
    }

    func directory(_ ino: UInt64, _ operation: String) throws(UnionError) -> (UnionNode, [UInt8]) {
        let node = try node(ino, operation)
        let path = try linkedPath(node, operation)
        guard node.isDirectory else { throw .with(ENOTDIR, operation, path) }
        return (node, path)
    }

    func makeNode(parent: UnionNode, name: [UInt8], layer: Int, dirLayers: [Int], type: mode_t) -> UnionNode {
        let node = UnionNode(ino: nextIno, parent: parent, name: name, layer: layer, dirLayers: dirLayers, type: type)
        nextIno += 1
        nodes[node.ino] = node
        parent.children[name] = node
        return node
    }

    /// Drops a node from the table once it has no name and the kernel has forgotten it.
    func releaseIfUnused(_ node: UnionNode) {
        if node.names.isEmpty && node.lookups == 0 && !node.isRoot {
            nodes[node.ino] = nil
            if let key = node.hardlinkKey, hardlinks[key] === node { hardlinks[key] = nil }
            if let held = node.heldFD {
                close(held)
                node.heldFD = nil
            }
        }
    }

    /// Unlinks `name` from the tree (after the backing entry was removed or replaced). `held` is
    /// what `holdBeforeLastName` answered before the removal: kept by the node once it has no name.
    func detach(_ node: UnionNode, parent: UnionNode, name: [UInt8], held: Int32? = nil) {
        node.removeName(parent: parent, name: name)
        if let held {
            if node.isLinked || node.heldFD != nil { close(held) } else { node.heldFD = held }
        }
        releaseIfUnused(node)
    }

    static func validName(_ name: [UInt8], _ operation: String) throws(UnionError) {
        if name.isEmpty || name == FileSystem.dot || name == [UInt8(ascii: "."), UInt8(ascii: ".")] || name.contains(FileSystem.slash) {
            throw .with(EINVAL, operation, name)
        }
        if name.count > 255 { throw .with(ENAMETOOLONG, operation, name) }
    }

    // MARK: Lookup

    /// What a name resolves to across the layers of its parent dir.
    struct Resolution {
        var layer: Int
        var dirLayers: [Int]
        var stat: stat
    }

    /// Resolves `name` in a dir through its layers: the first layer holding it (not a whiteout)
    /// decides; a dir collects the dirs of the same name below it until an opaque one or a
    /// non-dir.
    func resolve(parent: UnionNode, parentPath: [UInt8], name: [UInt8]) throws(UnionError) -> Resolution? {
        let path = FileSystem.join(parentPath, name)
        var found: Resolution?
        for layer in parent.dirLayers {
            if layers.isAufsWhitedOut(layer, parent: parentPath, name: name) { break }
            guard let st = FileSystem.lstat(layers.fds[layer], path) else {
                if errno == ENOENT || errno == ENOTDIR { continue }
                throw .last("lookup", path)
            }
            if LayerFormat.isWhiteoutDevice(st) { break }
            if var top = found {
                guard FileSystem.isDirectory(st) else { break }
                top.dirLayers.append(layer)
                found = top
                if layers.isOpaque(layer, path) { break }
                continue
            }
            if FileSystem.isDirectory(st) {
                found = Resolution(layer: layer, dirLayers: [layer], stat: st)
                if layers.isOpaque(layer, path) { break }
            } else {
                found = Resolution(layer: layer, dirLayers: [], stat: st)
                break
            }
        }
        return found
    }

    /// The child node for `name`, resolving and adding it to the table when it is not there yet;
    /// nil when the name does not exist in the union.
    func child(_ parent: UnionNode, _ parentPath: [UInt8], _ name: [UInt8]) throws(UnionError) -> UnionNode? {
        if let existing = parent.children[name] { return existing }
        guard let r = try resolve(parent: parent, parentPath: parentPath, name: name) else { return nil }
        let type = FileSystem.fileType(r.stat)
        if r.layer == UnionLayerStack.upper && FileSystem.isRegularFile(r.stat) && r.stat.st_nlink > 1 {
            let key = HardlinkKey(dev: UInt64(r.stat.st_dev), ino: UInt64(r.stat.st_ino))
            if let shared = hardlinks[key], shared.isLinked {
                shared.names.append((parent, name))
                parent.children[name] = shared
                return shared
            }
            let node = makeNode(parent: parent, name: name, layer: r.layer, dirLayers: r.dirLayers, type: type)
            hardlinks[key] = node
            node.hardlinkKey = key
            return node
        }
        return makeNode(parent: parent, name: name, layer: r.layer, dirLayers: r.dirLayers, type: type)
    }

    /// The backing stat of a node, with the union's inode number.
    func stat(of node: UnionNode, path: [UInt8], _ operation: String) throws(UnionError) -> stat {
        guard var st = FileSystem.lstat(layers.fds[node.layer], path) else { throw .last(operation, path) }
        st.st_ino = ino_t(node.ino)
        return st
    }

    /// Looks `name` up in dir `parent` and counts one kernel reference to the result.
    public func lookup(parent: UInt64, name: [UInt8]) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            let (dir, dirPath) = try directory(parent, "lookup")
            guard let node = try child(dir, dirPath, name) else { throw .with(ENOENT, "lookup", FileSystem.join(dirPath, name)) }
            let st = try stat(of: node, path: FileSystem.join(dirPath, name), "lookup")
            node.lookups += 1
            return st
        }
    }

    /// Drops `count` kernel references to an inode.
    public func forget(_ ino: UInt64, count: UInt64) {
        mutex.locked {
            guard let node = nodes[ino], !node.isRoot else { return }
            node.lookups = node.lookups > count ? node.lookups - count : 0
            releaseIfUnused(node)
        }
    }

    /// The attributes of an inode (`st_ino` is the union's number).
    public func attributes(_ ino: UInt64) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            let node = try node(ino, "getattr")
            if let held = node.heldFD { return try heldStat(node, held, "getattr") }
            return try stat(of: node, path: try linkedPath(node, "getattr"), "getattr")
        }
    }

    /// The inode number of a path in the union (`a/b/c`, `` or `.` for the root), looking each
    /// component up without counting kernel references. For tools and tests.
    public func inode(ofPath path: String) throws(UnionError) -> UInt64 {
        try mutex.locked { () throws(UnionError) -> UInt64 in
            var node = root
            var nodePath = FileSystem.dot
            for component in path.split(separator: "/") where component != "." {
                let name = Array(component.utf8)
                guard node.isDirectory else { throw UnionError(ENOTDIR, "lookup", path) }
                guard let next = try child(node, nodePath, name) else { throw UnionError(ENOENT, "lookup", path) }
                nodePath = FileSystem.join(nodePath, name)
                node = next
            }
            return node.ino
        }
    }

    /// The target of a symlink.
    public func readLink(_ ino: UInt64) throws(UnionError) -> [UInt8] {
        try mutex.locked { () throws(UnionError) -> [UInt8] in
            let node = try node(ino, "readlink")
            if let held = node.heldFD { return try readHeldLink(node, held) }
            let path = try linkedPath(node, "readlink")
            var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = withCString(path) { p in buffer.withUnsafeMutableBytes { readlinkat(layers.fds[node.layer], p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) } }
            guard n >= 0 else { throw .last("readlink", path) }
            return Array(buffer[..<n])
        }
    }

    /// File system statistics of the upper dir (where every write goes).
    public func statistics() throws(UnionError) -> statvfs {
        var sv = statvfs()
        guard fstatvfs(layers.fds[UnionLayerStack.upper], &sv) == 0 else { throw .last("statfs", FileSystem.dot) }
        return sv
    }
}

extension UnionFileSystem {
    /// The inode number `name` in dir `parent` has (or gets), without counting a kernel
    /// reference: for plain readdir's `d_ino`.
    public func peekInode(parent: UInt64, name: [UInt8]) throws(UnionError) -> UInt64 {
        try mutex.locked { () throws(UnionError) -> UInt64 in
            let (dir, dirPath) = try directory(parent, "readdir")
            guard let node = try child(dir, dirPath, name) else { throw .with(ENOENT, "readdir", FileSystem.join(dirPath, name)) }
            return node.ino
        }
    }
}
