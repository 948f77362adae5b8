import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Resolves the paths of an overlay-format layer being written on top of its lower layers the way
/// the mounted stack will see them, so that a store's layers mean what a plain unpack of the same
/// image means.
///
/// A plain unpack resolves `lnk/file` through a symlink `lnk` that an earlier layer made (inside
/// the target). A layer written alone into its own dir would instead make a real dir `lnk/` there,
/// which on the mounted stack hides the symlink: another tree. So here every parent path is looked
/// up through this layer and the lowers, top first, as overlayfs looks it up (a whiteout hides what
/// is below it, an opaque dir hides the dirs of the same name below, a non-dir ends the search),
/// symlinks found on the way are followed inside the stack (absolute targets from its root, `..`
/// stopping at the root, 40 hops at most), and the resulting path is made of dirs in this layer,
/// each taking the mode, owner, xattrs and times the stack shows for it (an implied parent keeps
/// the metadata it has below, as containerd does).
final class MergedResolver {
    /// This layer's dir, where everything is written.
    let layer: ConfinedResolver
    /// This layer's root (index 0) and the lowers' roots, top first.
    private let roots: [Int32]
    private let namespace: OverlayXattrNamespace
    private let policy: XattrPolicy
    /// Canonical parents found so far, by the path they were asked for.
    private var cache: [EntryPath: EntryPath] = [:]
    /// Dirs made in this layer to hold entries (a dir the stack shows, copied up).
    private(set) var createdDirectories: [EntryPath] = []

    init(layer: ConfinedResolver, lowers: [String], namespace: OverlayXattrNamespace, policy: XattrPolicy) throws(LayerError) {
        var roots = [layer.rootFD]
        for lower in lowers {
            let fd = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else {
                let e = Errno(rawValue: errno)
                for opened in roots.dropFirst() { close(opened) }
                throw .system(e, entry: nil, "cannot open lower layer \(lower)")
            }
            roots.append(fd)
        }
        self.layer = layer
        self.roots = roots
        self.namespace = namespace
        self.policy = policy
    }

    deinit { for fd in roots.dropFirst() { close(fd) } }

    /// Forgets what was resolved: this layer changed (a symlink, dir or whiteout came or went).
    func invalidate() { cache.removeAll(keepingCapacity: true) }

    // MARK: Lookups

    /// What the stack shows at a name.
    enum Visible {
        case missing
        /// A dir, with the layers that contribute to it (top first).
        case directory(layers: [Int])
        /// Something else, from the topmost layer that has it.
        case other(layer: Int, stat)
    }

    /// Looks `name` up in the dir `parent`, whose contributing layers are `parentLayers`.
    func lookup(_ parentLayers: [Int], _ parent: EntryPath, _ name: [UInt8]) -> Visible {
        let path = parent.appending(name)
        var dirs = [Int]()
        for layerIndex in parentLayers {
            // `path`'s ancestors are real dirs in every contributing layer: nothing is followed.
            guard let st = FileSystem.lstat(roots[layerIndex], path.bytes.isEmpty ? FileSystem.dot : path.bytes) else { continue }
            if LayerFormat.isWhiteoutDevice(st) { break }
            guard FileSystem.isDirectory(st) else {
                if dirs.isEmpty { return .other(layer: layerIndex, st) }
                break
            }
            dirs.append(layerIndex)
            if isOpaque(layerIndex, path) { break }
        }
        return dirs.isEmpty ? .missing : .directory(layers: dirs)
    }

    private func isOpaque(_ layerIndex: Int, _ path: EntryPath) -> Bool {
        let fd = FileSystem.openBeneath(roots[layerIndex], path.bytes)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var value = [UInt8](repeating: 0, count: 8)
        let n = value.withUnsafeMutableBytes { fgetxattr(fd, namespace.opaque, $0.baseAddress, $0.count) }
        return n == 1 && value[0] == UInt8(ascii: "y")
    }

    /// The root's contributing layers: all of them, down to the first opaque root.
    private var rootLayers: [Int] {
        var layers = [Int]()
        for index in roots.indices {
            layers.append(index)
            if isOpaque(index, .root) { break }
        }
        return layers
    }

    // MARK: Resolving

    /// The path, in the stack, of the dir that `path` names, following symlinks inside the stack;
    /// components from the first missing one on are taken as they are (they will be made).
    func canonical(_ path: EntryPath) throws(LayerError) -> EntryPath {
        if path.isRoot { return .root }
        if let known = cache[path] { return known }
        var resolved = [[UInt8]]()
        var levels = [rootLayers]
        var pending = path.bytes.split(separator: FileSystem.slash, omittingEmptySubsequences: true).map(Array.init)
        var hops = 0
        var missing = false
        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == FileSystem.dot { continue }
            if name == FileSystem.dotDot {
                if !resolved.isEmpty { resolved.removeLast(); levels.removeLast() }
                continue
            }
            if missing {
                resolved.append(name)
                levels.append([])
                continue
            }
            let parent = EntryPath(bytes: Array(resolved.joined(separator: [FileSystem.slash])))
            switch lookup(levels.last!, parent, name) {
            case .missing:
                missing = true
                resolved.append(name)
                levels.append([])
            case .directory(let layers):
                resolved.append(name)
                levels.append(layers)
            case .other(let layerIndex, let st):
                guard FileSystem.isSymlink(st) else {
                    throw LayerError(.system(.notDirectory), "a parent of the entry is not a directory (\"\(parent.appending(name))\")")
                }
                hops += 1
                guard hops <= 40 else {
                    throw LayerError(.system(.tooManySymbolicLinkLevels), "too many levels of symbolic links resolving \"\(path)\"")
                }
                let target: [UInt8]
                do throws(Errno) { target = try FileSystem.readLink(roots[layerIndex], parent.appending(name).bytes) } catch {
                    throw .system(error, entry: nil, "cannot read symlink \"\(parent.appending(name))\"")
                }
                if target.first == FileSystem.slash {
                    resolved.removeAll()
                    levels = [rootLayers]
                }
                pending = target.split(separator: FileSystem.slash, omittingEmptySubsequences: true).map(Array.init) + pending
            }
        }
        let result = EntryPath(bytes: Array(resolved.joined(separator: [FileSystem.slash])))
        guard result.bytes.count <= EntryValidator.maximumPathLength else {
            throw LayerError(.invalidEntry, "path longer than \(EntryValidator.maximumPathLength) bytes once symlinks are followed")
        }
        cache[path] = result
        return result
    }

    /// The dir `path` names, resolved through the stack and made of dirs in this layer (with the
    /// metadata the stack shows for each). Returns its fd (owned by `layer`) and its path.
    func directory(_ path: EntryPath, create: Bool) throws(LayerError) -> (fd: Int32, path: EntryPath) {
        let dir = try canonical(path)
        if create { try materialize(dir) }
        return (try layer.directory(dir, create: false), dir)
    }

    /// Makes every component of `dir` a dir in this layer.
    private func materialize(_ dir: EntryPath) throws(LayerError) {
        guard !dir.isRoot else { return }
        var prefix = EntryPath.root
        var layers = rootLayers
        for component in dir.bytes.split(separator: FileSystem.slash).map(Array.init) {
            let parentFD = try layer.directory(prefix, create: false)
            let path = prefix.appending(component)
            let visible = lookup(layers, prefix, component)
            if let own = FileSystem.lstat(parentFD, component), FileSystem.isDirectory(own) {
                // This layer has it already.
            } else {
                try makeDirectory(parentFD, component, path, like: visible)
            }
            if case .directory(let below) = visible { layers = below.contains(0) ? below : [0] + below } else { layers = [0] }
            prefix = path
        }
    }

    /// Makes `name` a dir in this layer: over a whiteout of this layer (then opaque: nothing below
    /// shows through), or where nothing is, with the metadata of the dir the stack has there.
    private func makeDirectory(_ parentFD: Int32, _ name: [UInt8], _ path: EntryPath, like visible: Visible) throws(LayerError) {
        var opaque = false
        if let own = FileSystem.lstat(parentFD, name) {
            guard LayerFormat.isWhiteoutDevice(own) else {
                throw LayerError(.system(.notDirectory), "a parent of the entry is not a directory (\"\(path)\")")
            }
            guard withCString(name, { unlinkat(parentFD, $0, 0) }) == 0 else {
                throw .system(Errno(rawValue: errno), entry: nil, "cannot replace the whiteout at \"\(path)\"")
            }
            opaque = true
            invalidate()
        }
        guard withCString(name, { mkdirat(parentFD, $0, 0o755) }) == 0 else {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot create directory \"\(path)\"")
        }
        createdDirectories.append(path)
        let fd = withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open directory \"\(path)\"") }
        defer { close(fd) }
        if case .directory(let layers) = visible, let top = layers.first(where: { $0 != 0 }) {
            try copyMetadata(from: top, path, to: fd)
        }
        if opaque {
            let value = OverlayXattrNamespace.opaqueValue
            guard value.withUnsafeBytes({ fsetxattr(fd, namespace.opaque, $0.baseAddress, $0.count, 0) }) == 0 else {
                throw .system(Errno(rawValue: errno), entry: nil, "cannot mark \"\(path)\" opaque")
            }
        }
    }

    /// Gives `fd` the owner, mode, xattrs and times of `path` in a lower layer.
    private func copyMetadata(from layerIndex: Int, _ path: EntryPath, to fd: Int32) throws(LayerError) {
        let source = FileSystem.openBeneath(roots[layerIndex], path.bytes)
        guard source >= 0, let st = FileSystem.attributes(of: source) else {
            if source >= 0 { close(source) }
            return
        }
        defer { close(source) }
        if geteuid() == 0 { _ = fchown(fd, st.st_uid, st.st_gid) }
        _ = fchmod(fd, st.st_mode & 0o7777)
        for attribute in Xattrs.all(fd: source) where policy.carries(attribute.name) {
            _ = attribute.value.withUnsafeBytes { fsetxattr(fd, attribute.name, $0.baseAddress, $0.count, 0) }
        }
        var times = [st.st_atim, st.st_mtim]
        _ = futimens(fd, &times)
    }

    // MARK: Hardlink targets

    /// Where the regular file `path` is in the stack: its canonical path and the layer that shows it.
    func locateFile(_ path: EntryPath) throws(LayerError) -> (path: EntryPath, layer: Int)? {
        let parent = try canonical(path.parent)
        var layers = rootLayers
        var prefix = EntryPath.root
        for component in parent.bytes.split(separator: FileSystem.slash).map(Array.init) {
            guard case .directory(let below) = lookup(layers, prefix, component) else { return nil }
            layers = below
            prefix = prefix.appending(component)
        }
        guard case .other(let layerIndex, let st) = lookup(layers, parent, Array(path.name)), FileSystem.isRegularFile(st) else { return nil }
        return (parent.appending(path.name), layerIndex)
    }

    /// Copies the file at `path` (canonical) from a lower layer into this layer, with its owner,
    /// mode and times, so that a hardlink can point at it.
    func copyUp(_ path: EntryPath, from layerIndex: Int) throws(LayerError) {
        let source = FileSystem.openBeneath(roots[layerIndex], path.bytes, flags: O_RDONLY | O_NOFOLLOW)
        guard source >= 0, let st = FileSystem.attributes(of: source), FileSystem.isRegularFile(st) else {
            if source >= 0 { close(source) }
            throw LayerError(.invalidEntry, entry: path.description, "hardlink target not found in this layer or below")
        }
        defer { close(source) }
        let (parentFD, _) = try directory(path.parent, create: true)
        let output = withCString(path.name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        guard output >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot copy up from lower layer") }
        defer { close(output) }
        do throws(Errno) { try DataCopy.copySparse(from: source, to: output, size: Int64(st.st_size)) } catch {
            throw .system(error, entry: path.description, "cannot copy up from lower layer")
        }
        if geteuid() == 0 { _ = fchown(output, st.st_uid, st.st_gid) }
        _ = fchmod(output, st.st_mode & 0o7777)
        for attribute in Xattrs.all(fd: source) where policy.carries(attribute.name) {
            _ = attribute.value.withUnsafeBytes { fsetxattr(output, attribute.name, $0.baseAddress, $0.count, 0) }
        }
        var times = [st.st_atim, st.st_mtim]
        _ = futimens(output, &times)
    }
}
