import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Opens the directories of a target tree by their paths in a layer, confined to the target:
/// every path is resolved by the kernel as if the target were `/` (`openat2` with
/// `RESOLVE_IN_ROOT`), so `..`, absolute names and symlinks pointing anywhere can only reach
/// inside it. Missing directories are made on the way (0755, owned by the caller), through
/// symlinks that point inside.
///
/// Open dirs are cached by path (tar streams are mostly grouped by dir). Any removal of a dir or
/// symlink must `invalidate()` the cache, since paths through it now resolve elsewhere; fds
/// dropped from the cache stay open until the current entry is done (`endEntry()`), because the
/// caller may still hold one.
final class ConfinedResolver {
    let rootFD: Int32
    private var cache: [EntryPath: Int32] = [:]
    private static let cacheLimit = 128
    private var retired: [Int32] = []
    private var aliased = Set<EntryPath>()
    private lazy var rootRealPath: [UInt8] = FileSystem.path(of: rootFD)
    /// Dirs made on the way to an entry (paths from the root, as the kernel resolved them).
    private(set) var createdDirectories: [[UInt8]] = []

    init(rootFD: Int32) { self.rootFD = rootFD }

    deinit { closeAll() }

    /// An fd for the directory at `path`. With `create`, missing dirs are made.
    func directory(_ path: EntryPath, create: Bool, hops: Int = 0) throws(LayerError) -> Int32 {
        if path.isRoot { return rootFD }
        if let fd = cache[path] { return fd }
        guard hops < 40 else { throw LayerError(.system(.tooManySymbolicLinkLevels), "too many levels of symbolic links resolving \"\(path)\"") }
        // Through real dirs only first: a dir that takes a symlink to reach is another path's too.
        var fd = FileSystem.openBeneath(rootFD, path.bytes)
        if fd >= 0 {
            remember(path, fd)
            return fd
        }
        fd = FileSystem.openInRoot(rootFD, path.bytes)
        if fd >= 0 {
            remember(path, fd)
            aliased.insert(path)
            return fd
        }
        let err = Errno(rawValue: errno)
        switch err {
        case .noSuchFileOrDirectory where create:
            try makeDirectories(path.bytes, hops: hops)
            return try directory(path, create: false, hops: hops)
        case .notDirectory:
            throw LayerError(.system(err), "a parent of the entry is not a directory (\"\(path)\")")
        default:
            throw .system(err, entry: nil, "cannot open parent directory \"\(path)\"")
        }
    }

    /// Whether the dir at `path` is open already (so it exists, as a dir, right now).
    func isCached(_ path: EntryPath) -> Bool { path.isRoot || cache[path] != nil }

    /// Whether the cached dir at `path` was reached through a symlink (or is below one that was):
    /// a name in it may be reached by another path too.
    func isAliased(_ path: EntryPath) -> Bool { aliased.contains(path) }

    /// Whether fds were dropped that `endEntry()` will close.
    var hasRetired: Bool { !retired.isEmpty }

    /// Caches an fd the caller opened for `path` (a dir it just made); the resolver owns it now.
    func remember(_ path: EntryPath, _ fd: Int32) {
        let belowAlias = !path.isRoot && aliased.contains(path.parent)
        if cache.count >= Self.cacheLimit { invalidate() }
        if let old = cache.updateValue(fd, forKey: path) { retired.append(old) }
        if belowAlias { aliased.insert(path) }
    }

    /// Forgets every cached dir; the fds stay open until the current entry is done.
    func invalidate() {
        retired.append(contentsOf: cache.values)
        cache.removeAll(keepingCapacity: true)
        aliased.removeAll()
    }

    /// Closes the fds dropped while the last entry was applied.
    func endEntry() {
        guard !retired.isEmpty else { return }
        for fd in retired { close(fd) }
        retired.removeAll(keepingCapacity: true)
    }

    func closeAll() {
        invalidate()
        endEntry()
    }

    /// Opens an existing dir by path without caching it (the caller closes it); -1 if it cannot.
    func openUncached(_ path: EntryPath) -> Int32 {
        path.isRoot ? dup(rootFD) : FileSystem.openInRoot(rootFD, path.bytes, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
    }

    /// Makes the directory `raw` (a path the kernel resolves inside the root) and any missing
    /// parents, 0755. A dangling symlink on the way is followed the way the kernel would follow it:
    /// its target is made, relative to where the link really is (absolute targets from the root).
    /// The recursion is bounded by the components of one path (at most `PATH_MAX`) and 40 hops.
    private func makeDirectories(_ raw: [UInt8], hops: Int) throws(LayerError) {
        guard hops < 40 else {
            throw LayerError(.system(.tooManySymbolicLinkLevels), "too many levels of symbolic links creating \"\(String(decoding: raw, as: UTF8.self))\"")
        }
        let display = String(decoding: raw, as: UTF8.self)
        let fd = FileSystem.openInRoot(rootFD, raw)
        if fd >= 0 { close(fd); return }
        guard errno == ENOENT else {
            let e = Errno(rawValue: errno)
            if e == .notDirectory { throw LayerError(.system(e), "a parent of the entry is not a directory (\"\(display)\")") }
            throw .system(e, entry: nil, "cannot open parent directory \"\(display)\"")
        }
        var trimmed = raw[...]
        while trimmed.count > 1, trimmed.last == FileSystem.slash { trimmed = trimmed.dropLast() }
        let parent: [UInt8]
        let last: ArraySlice<UInt8>
        if let slash = trimmed.lastIndex(of: FileSystem.slash) {
            parent = slash == trimmed.startIndex ? [FileSystem.slash] : Array(trimmed[..<slash])
            last = trimmed[(slash + 1)...]
        } else {
            parent = FileSystem.dot
            last = trimmed
        }
        try makeDirectories(parent, hops: hops)
        if last.isEmpty || last.elementsEqual(FileSystem.dot) || last.elementsEqual(FileSystem.dotDot) { return }
        let parentFD = FileSystem.openInRoot(rootFD, parent)
        guard parentFD >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open parent directory \"\(display)\"") }
        defer { close(parentFD) }
        if withCString(last, { mkdirat(parentFD, $0, 0o755) }) == 0 {
            createdDirectories.append(parent == [FileSystem.slash] ? [FileSystem.slash] + Array(last) : parent + [FileSystem.slash] + Array(last))
            return
        }
        if errno != EEXIST { return }
        guard let st = FileSystem.lstat(parentFD, last), FileSystem.isSymlink(st) else { return }
        let target: [UInt8]
        do throws(Errno) { target = try FileSystem.readLink(parentFD, last) } catch {
            throw .system(error, entry: nil, "cannot read symlink in \"\(display)\"")
        }
        if target.first == FileSystem.slash {
            try makeDirectories(target, hops: hops + 1)
        } else {
            try makeDirectories(try realPathInRoot(parentFD) + [FileSystem.slash] + target, hops: hops + 1)
        }
    }

    /// Where an open dir really is, as a path from the root (`/` for the root itself).
    private func realPathInRoot(_ fd: Int32) throws(LayerError) -> [UInt8] {
        let real = FileSystem.path(of: fd)
        let root = rootRealPath
        guard real.starts(with: root) else { throw LayerError(.pathEscapes, "a directory resolved outside the target") }
        let rest = Array(real[root.count...])
        return rest.isEmpty ? [FileSystem.slash] : (rest.first == FileSystem.slash ? rest : [FileSystem.slash] + rest)
    }
}
