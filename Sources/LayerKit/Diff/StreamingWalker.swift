import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Walks a tree whose every entry goes into the layer and hands each item to the writer as soon
/// as it is found, in exactly the order `ChangeSet.ordered()` gives (dir by dir: opaque marker,
/// whiteouts, then entries by name, each dir followed by its contents). Compression starts with
/// the first entry instead of after a full walk.
///
/// Used where nothing found later can change what was already written: a full first layer (OLD
/// is empty: no content comparisons, every hardlink name is in the layer), an upper dir (every
/// name in it is a change), and a dir a two-tree diff finds only in NEW.
///
/// Upper dirs: a char device 0/0 (overlay) or a `.wh.NAME` file (aufs) is a deletion; an opaque
/// xattr or `.wh..wh..opq` marks an opaque dir. Uppers that use overlayfs's redirect_dir or
/// metacopy cannot be read alone and are refused.
///
/// The walk is iterative (a `DirectoryCursor`, one open dir): a tree of any depth costs the
/// entries still to write on the path, never a stack frame per level.
enum StreamingWalker {
    typealias Emit = (DiffItem) throws(LayerError) -> Void

    /// Every entry below the root of a new tree, as added nodes.
    static func fullTree(rootFD: Int32, rootPath: [UInt8], emit: Emit, warn: (String) -> Void) throws(LayerError) {
        try walk(.root, fd: rootFD, upper: false, rootPath: rootPath, emit: emit, warn: warn)
    }

    /// Everything below `dir` (open as `fd`) of a new tree whose root is at `rootPath`, as added nodes.
    static func contents(of dir: EntryPath, fd: Int32, rootPath: [UInt8], emit: Emit, warn: (String) -> Void) throws(LayerError) {
        try walk(dir, fd: fd, upper: false, rootPath: rootPath, emit: emit, warn: warn)
    }

    /// An overlayfs or aufs-style upper dir.
    static func upper(rootFD: Int32, rootPath: [UInt8], emit: Emit, warn: (String) -> Void) throws(LayerError) {
        try walk(.root, fd: rootFD, upper: true, rootPath: rootPath, emit: emit, warn: warn)
    }

    /// One dir on the walk's path: its entries still to write (with whether each child dir is
    /// opaque in an upper), and the next one.
    private struct Level {
        var nodes: [(item: DiffItem, opaque: Bool)]
        var next = 0
    }

    private static func walk(_ top: EntryPath, fd: Int32, upper: Bool, rootPath: [UInt8],
                             emit: Emit, warn: (String) -> Void) throws(LayerError) {
        let cursor: DirectoryCursor
        do throws(Errno) { cursor = try DirectoryCursor(root: fd) } catch { throw .system(error, entry: top.description, "cannot open directory") }
        var levels = [try enter(top, cursor.fd, upper: upper, rootPath: rootPath, opaque: false, emit: emit, warn: warn)]
        while !levels.isEmpty {
            let last = levels.count - 1
            guard levels[last].next < levels[last].nodes.count else {
                levels.removeLast()
                if !levels.isEmpty {
                    do throws(Errno) { try cursor.ascend() } catch { throw .system(error, entry: top.description, "the tree changed during the walk") }
                }
                continue
            }
            var (item, childOpaque) = levels[last].nodes[levels[last].next]
            levels[last].next += 1
            item.parentFD = cursor.fd
            try emit(item)
            guard FileSystem.isDirectory(item.st) else { continue }
            do throws(Errno) { try cursor.descend(Array(item.path.name)) } catch {
                throw .system(error, entry: item.path.description, "cannot open directory")
            }
            levels.append(try enter(item.path, cursor.fd, upper: upper, rootPath: rootPath, opaque: childOpaque, emit: emit, warn: warn))
        }
    }

    /// Reads one dir: emits its opaque marker and whiteouts at once, returns its entries sorted.
    private static func enter(_ dir: EntryPath, _ fd: Int32, upper: Bool, rootPath: [UInt8], opaque: Bool,
                              emit: Emit, warn: (String) -> Void) throws(LayerError) -> Level {
        let names: [[UInt8]]
        do throws(Errno) { names = try FileSystem.sortedNames(of: fd) } catch {
            throw .system(error, entry: dir.description, "cannot read directory")
        }
        var whiteouts = [EntryPath]()
        var nodes = [(item: DiffItem, opaque: Bool)]()
        var isOpaque = opaque
        for name in names {
            let path = dir.appending(name)
            if upper {
                switch LayerFormat.marker(name) {
                case .none: break
                case .opaque: isOpaque = true; continue
                case .whiteout(let hidden): whiteouts.append(dir.appending(hidden)); continue
                case .aufsMetadata, .invalidWhiteout: continue
                }
            }
            guard let st = FileSystem.lstat(fd, name) else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot stat") }
            var childOpaque = false
            if upper {
                if LayerFormat.isWhiteoutDevice(st) {
                    whiteouts.append(path)
                    continue
                }
                let xattrs = Xattrs.all(fd, name, absolute: ChangeSet.absolute(rootPath, path))
                for attribute in xattrs {
                    if let feature = OverlayXattrNamespace.lowerDependentFeature(attribute.name) {
                        throw LayerError(.invalidEntry, entry: path.description,
                                         "the upper dir uses overlayfs \(feature) (\(attribute.name)); it cannot be diffed without its lower layers: diff the mounted tree against the lower tree instead")
                    }
                }
                childOpaque = FileSystem.isDirectory(st) && OverlayXattrNamespace.marksOpaque(xattrs)
            }
            if FileSystem.fileType(st) == mode_t(LK_S_IFSOCK) {
                warn("entry \"\(path)\": socket skipped (a tar layer cannot hold sockets)")
                continue
            }
            var item = DiffItem(kind: .node, path: path, st: st)
            if FileSystem.isSymlink(st) {
                do throws(Errno) { item.linkTarget = try FileSystem.readLink(fd, name) } catch {
                    throw .system(error, entry: path.description, "cannot read symlink")
                }
            }
            nodes.append((item, childOpaque))
        }
        if isOpaque { try emit(DiffItem(kind: .opaque, path: dir, parentFD: fd)) }
        whiteouts.sort { $0.name.lexicographicallyPrecedes($1.name) }
        for path in whiteouts { try emit(DiffItem(kind: .whiteout, path: path, parentFD: fd)) }
        return Level(nodes: nodes)
    }
}
