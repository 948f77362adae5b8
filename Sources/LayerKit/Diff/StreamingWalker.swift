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
/// is empty: no content comparisons, every hardlink name is in the layer) and an upper dir (every
/// name in it is a change).
enum StreamingWalker {
    typealias Emit = (DiffItem) throws(LayerError) -> Void

    /// Every entry below the new root, as added nodes.
    static func fullTree(rootFD: Int32, emit: Emit, warn: (String) -> Void) throws(LayerError) {
        try walk(.root, fd: rootFD, upper: false, opaque: false, emit: emit, warn: warn)
    }

    /// Everything below `dir` (open as `fd`) of a new tree, as added nodes.
    static func contents(of dir: EntryPath, fd: Int32, emit: Emit, warn: (String) -> Void) throws(LayerError) {
        try walk(dir, fd: fd, upper: false, opaque: false, emit: emit, warn: warn)
    }

    /// An overlayfs or aufs-style upper dir (see `ChangeWalker.upper`).
    static func upper(rootFD: Int32, rootPath: [UInt8], emit: Emit, warn: (String) -> Void) throws(LayerError) {
        try walk(.root, fd: rootFD, upper: true, rootPath: rootPath, opaque: false, emit: emit, warn: warn)
    }

    private static func walk(_ dir: EntryPath, fd: Int32, upper: Bool, rootPath: [UInt8] = [], opaque: Bool,
                             emit: Emit, warn: (String) -> Void) throws(LayerError) {
        var whiteouts = [EntryPath]()
        var nodes = [(item: DiffItem, opaque: Bool)]()
        var isOpaque = opaque
        for nameArray in try FS.listDir(fd).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let name = nameArray[...]
            let path = dir.appending(name)
            if upper && name.starts(with: ApplyEngine.whiteoutPrefix) {
                if name.elementsEqual(ApplyEngine.opaqueMarker) {
                    isOpaque = true
                } else if !name.starts(with: ApplyEngine.metaPrefix) {
                    whiteouts.append(dir.appending(name.dropFirst(ApplyEngine.whiteoutPrefix.count)))
                }
                continue
            }
            var st = stat()
            guard FS.lstatInto(fd, name, &st) else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot stat") }
            let type = FS.fileType(st)
            var childOpaque = false
            if upper {
                if type == mode_t(LK_S_IFCHR) && st.st_rdev == 0 {
                    whiteouts.append(path)
                    continue
                }
                let xattrs = ChangeSet.allXattrs(ChangeSet.absolute(rootPath, path))
                try ChangeWalker.refuseRedirects(xattrs, path: path)
                childOpaque = type == mode_t(LK_S_IFDIR) && ChangeWalker.isOpaque(xattrs)
            }
            if type == mode_t(LK_S_IFSOCK) {
                warn("entry \"\(path)\": socket skipped (a tar layer cannot hold sockets)")
                continue
            }
            var item = DiffItem(kind: .node, path: path, st: st)
            if type == mode_t(LK_S_IFLNK) { item.linkTarget = try ChangeSet.readLink(fd, name, path) }
            nodes.append((item, childOpaque))
        }

        if isOpaque { try emit(DiffItem(kind: .opaque, path: dir)) }
        whiteouts.sort { $0.name.lexicographicallyPrecedes($1.name) }
        for path in whiteouts { try emit(DiffItem(kind: .whiteout, path: path)) }
        for (item, childOpaque) in nodes {
            try emit(item)
            guard FS.isDir(item.st) else { continue }
            let child = FS.openDirBeneath(fd, item.path.name)
            guard child >= 0 else { throw .system(Errno(rawValue: errno), entry: item.path.description, "cannot open directory") }
            defer { close(child) }
            try walk(item.path, fd: child, upper: upper, rootPath: rootPath, opaque: childOpaque, emit: emit, warn: warn)
        }
    }
}
