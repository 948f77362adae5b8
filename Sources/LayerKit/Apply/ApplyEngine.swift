import CArchive
import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes the entries of one tar stream onto a target directory.
///
/// Parents are opened through a `ConfinedResolver` (the target is the root for every name and
/// link), and every change is an fd-relative `*at` call on the final component, never following
/// a symlink there. So `..`, absolute names and symlinks pointing anywhere can only reach inside
/// the target. Existing entries are unlinked and recreated, never written through (a file
/// hardlinked from elsewhere is never changed).
final class ApplyEngine {
    private let resolver: ConfinedResolver
    /// For an overlay-format layer on lowers: resolution through the whole stack.
    private let merged: MergedResolver?
    private let options: ApplyOptions
    private let overlay: OverlayXattrNamespace?
    private let lowers: LowerLayers
    private let umask: mode_t
    private let cancellation: CancellationFlag?

    /// What this layer has written, for whiteout/opaque semantics: a whiteout or opaque marker
    /// hides what lower layers put there, never what this layer wrote, whatever the order.
    private var written = Set<EntryPath>()
    private var writtenAncestors = Set<EntryPath>()
    private var lastParent: EntryPath? = nil

    /// Dir times are set once all children are in place.
    private var dirTimes: [(EntryPath, timespec, timespec)] = []
    /// Times of dirs this layer changes without naming them, restored at the end (as umoci does),
    /// so the result does not depend on when it was made.
    private var touchedDirs: [EntryPath: (timespec, timespec)] = [:]
    private var lastTouched: EntryPath? = nil

    /// Warnings with the number of the entry that raised them (files made by the pool report later).
    private var warningLog: [(sequence: Int, message: String)] = []
    private(set) var entryCount = 0

    /// Creates small files on other threads; only for a target that starts empty (nothing there
    /// but what this layer writes, so a name this layer has not written is free).
    private let pool: FileCreationPool?
    /// Set once an entry was placed through a symlinked dir: every later file is made here.
    private var createsSerially = false

    /// The bytes the layer takes on disk, counted while it is written (`st_blocks`, each inode
    /// once); nil once something happened that the count cannot follow (a removal, a copy-up),
    /// or when the target did not start empty.
    private var allocated: Int64?
    /// Dirs made without an entry naming them, measured at the end.
    private var unnamedDirectories: [EntryPath] = []

    init(rootFD: Int32, options: ApplyOptions, cancellation: CancellationFlag? = nil) throws(LayerError) {
        self.cancellation = cancellation
        let resolver = ConfinedResolver(rootFD: rootFD)
        self.resolver = resolver
        if case .overlay(let ns) = options.format, !options.lowerDirs.isEmpty {
            merged = try MergedResolver(layer: resolver, lowers: options.lowerDirs, namespace: ns, policy: options.xattrPolicy)
        } else {
            merged = nil
        }
        self.options = options
        if case .overlay(let ns) = options.format { overlay = ns } else { overlay = nil }
        self.lowers = LowerLayers(directories: options.lowerDirs)
        let umask = FileSystem.currentUmask()
        self.umask = umask
        let startsEmpty = !options.writesFilesAtomically && ((try? FileSystem.names(of: rootFD).isEmpty) ?? false)
        allocated = startsEmpty ? 0 : nil
        pool = startsEmpty && options.applyWorkers > 0 ? FileCreationPool(workers: options.applyWorkers, umask: umask) : nil
    }

    deinit { pool?.shutdown() }

    /// The warnings raised so far, in archive order.
    var warnings: [String] {
        warningLog.enumerated().sorted { ($0.element.sequence, $0.offset) < ($1.element.sequence, $1.offset) }.map(\.element.message)
    }

    /// The bytes the layer takes on disk, when they could be counted while it was written
    /// (valid after `finish()`).
    var allocatedBytes: Int64? { allocated }

    /// After a failure: the entries before it are made, as they are when files are made serially
    /// (a file of theirs that failed is the earlier failure, thrown here).
    func settle() throws(LayerError) { try drain() }

    /// Waits until every file handed to the pool exists; keeps what the pool reported.
    private func drain() throws(LayerError) {
        guard let pool, pool.pendingCount > 0 else { return }
        let (warnings, bytes) = try pool.drain()
        for warning in warnings {
            warningLog.append(warning)
            options.logger.warning("\(warning.message)")
        }
        if allocated != nil { allocated! += bytes }
    }

    /// The count of allocated bytes cannot follow what just happened: the store measures the tree.
    private func stopCounting() { allocated = nil }

    private func count(_ st: stat?) {
        if allocated != nil, let st { allocated! += Int64(st.st_blocks) * 512 }
    }

    private var rootFD: Int32 { resolver.rootFD }

    /// The dir an entry goes into, and the entry's path there: as named in a plain unpack (the
    /// kernel resolves it inside the target); through the whole stack for an overlay-format layer
    /// on lowers (`MergedResolver`), so the mounted stack shows what a plain unpack shows.
    private func place(_ path: EntryPath, create: Bool) throws(LayerError) -> (parentFD: Int32, path: EntryPath) {
        guard let merged else {
            let fd = try resolver.directory(path.parent, create: create)
            if pool != nil, !createsSerially, resolver.isAliased(path.parent) {
                // A name reached through a symlink is another path's too, which `written` does not
                // know: from here on the pool could be asked to create a name that exists.
                try drain()
                createsSerially = true
            }
            return (fd, path)
        }
        let (fd, dir) = try merged.directory(path.parent, create: create)
        return (fd, dir.appending(path.name))
    }

    /// A dir or symlink of this layer went or came: paths through it resolve elsewhere now.
    private func invalidateResolution() {
        resolver.invalidate()
        merged?.invalidate()
    }

    // MARK: - Entries

    /// Applies one entry whose header was just read from `archive`; its data is read here.
    func apply(_ entry: OpaquePointer, from archive: OpaquePointer) throws(LayerError) {
        entryCount += 1
        if resolver.hasRetired { try drain() }   // a file being created may still need one of them
        resolver.endEntry()
        var display: String?
        do throws(LayerError) {
            try cancellation?.check()
            let (path, shown) = try EntryValidator.path(of: entry)
            display = shown
            try applyEntry(entry, path: path, archive: archive)
        } catch var error {
            if error.entry == nil, let display { error.entry = display }
            throw error
        }
    }

    private func applyEntry(_ entry: OpaquePointer, path: EntryPath, archive: OpaquePointer) throws(LayerError) {
        let marker = LayerFormat.marker(path.name)
        if let pool, pool.pendingCount > 0 {
            // Whiteouts and hardlinks remove or reach existing names, and a parent dir not open yet
            // may be (below) a file still being created: those wait for the pool.
            if marker != .none || archive_entry_hardlink(entry) != nil || !resolver.isCached(path.parent) { try drain() }
        }
        switch marker {
        case .none: break
        case .opaque: return try applyOpaqueMarker(in: path.parent)
        case .whiteout(let hidden): return try applyWhiteout(path.parent, hidden, entry: entry)
        case .aufsMetadata: return   // aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): not content
        case .invalidWhiteout: throw LayerError(.invalidEntry, "invalid whiteout name")
        }
        if let target = archive_entry_hardlink(entry) {
            noteWritten(try applyHardlink(path, target: try EntryValidator.hardlinkTarget(target)))
            return
        }
        let type = archive_entry_filetype(entry)
        let perm = mode_t(archive_entry_perm(entry)) & 0o7777
        try EntryValidator.checkRoot(path, type: type)
        if path.isRoot {
            try applyDirMetadata(fd: rootFD, path: path, entry: entry, perm: perm)
            return
        }
        let (parentFD, placed) = try place(path, create: true)
        let path = placed
        // A name this layer wrote already is replaced: whatever is there must be complete first.
        let rewrites = wasWritten(path)
        if rewrites { try drain() }
        noteTouch(path.parent, parentFD)
        switch type {
        case UInt32(LK_S_IFREG):
            if let pool, !rewrites, !createsSerially, let file = try pendingFile(parentFD, path, entry: entry, archive: archive, perm: perm) {
                try pool.submit(file)
            } else {
                try writeFile(parentFD, path, entry: entry, archive: archive, perm: perm)
            }
        case UInt32(LK_S_IFDIR):
            try makeDirectory(parentFD, path, entry: entry, perm: perm)
        case UInt32(LK_S_IFLNK):
            let target = archive_entry_symlink(entry) ?? UnsafePointer(strdup(""))!
            try makeSymlink(parentFD, path, target: target, entry: entry)
        case UInt32(LK_S_IFCHR), UInt32(LK_S_IFBLK), UInt32(LK_S_IFIFO):
            try makeNode(parentFD, path, type: type, entry: entry, perm: perm)
        case UInt32(LK_S_IFSOCK):
            warn("entry \"\(path)\": socket skipped")
            return
        default:
            throw LayerError(.invalidEntry, "unsupported entry type 0o\(String(type, radix: 8))")
        }
        noteWritten(path)
    }

    /// Records that this layer wrote `path` (and so, that its ancestors exist in this layer).
    private func noteWritten(_ path: EntryPath) {
        written.insert(path)
        let parent = path.parent
        if parent == lastParent { return }
        lastParent = parent
        var p = parent
        while !p.isRoot, writtenAncestors.insert(p).inserted { p = p.parent }
    }

    private func wasWritten(_ path: EntryPath) -> Bool {
        written.contains(path) || writtenAncestors.contains(path)
    }

    // MARK: - Regular files

    private func writeFile(_ parentFD: Int32, _ path: EntryPath, entry: OpaquePointer, archive: OpaquePointer, perm: mode_t) throws(LayerError) {
        let createMode = perm & 0o777
        // Atomic mode: the file is made under a temporary name and renamed over the real one once
        // complete; otherwise under its name (the whole target is a staging dir).
        let temporary: [UInt8]? = options.writesFilesAtomically ? Array(".layertool-partial-\(UInt64.random(in: 0...UInt64.max))".utf8) : nil
        let name = temporary.map { $0[...] } ?? path.name
        var fd = withCString(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, createMode) }
        if fd < 0 && errno == EEXIST && temporary == nil {
            try removeExisting(parentFD, name)
            fd = withCString(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, createMode) }
        }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create file") }
        // A file whose data or metadata could not be written is removed, under whichever name it
        // has: no partial file is left, as with the pool, which creates a file only once its
        // data is read (found by the apply fuzz target: an archive ending inside a file's data).
        var installed = false
        defer {
            close(fd)
            if !installed { withCString(name) { _ = unlinkat(parentFD, $0, 0) } }
        }
        try writeFileContents(fd, entry: entry, archive: archive, perm: perm, createMode: createMode, path: path)
        if temporary == nil { installed = true }
        if allocated != nil { count(FileSystem.attributes(of: fd)) }
        if let temporary {
            // A dir cannot be renamed over; anything else is replaced in one step.
            if let existing = FileSystem.lstat(parentFD, path.name) {
                if FileSystem.isDirectory(existing) { try removeExisting(parentFD, path.name) }
                if FileSystem.isSymlink(existing) { invalidateResolution() }
            }
            let rc = withCString(temporary) { t in withCString(path.name) { renameat(parentFD, t, parentFD, $0) } }
            guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot rename the file into place") }
            installed = true
        }
    }

    /// Files up to this size go to the pool (their bytes are copied out of the archive's buffers);
    /// larger ones are written here, straight from those buffers.
    private static let pooledFileLimit: Int64 = 256 << 10

    /// The entry as a file for the pool, its data read out of the archive; nil (nothing read)
    /// for a file the pool does not take: a large or sparse one.
    private func pendingFile(_ parentFD: Int32, _ path: EntryPath, entry: OpaquePointer, archive: OpaquePointer,
                             perm: mode_t) throws(LayerError) -> PendingFile? {
        let size = archive_entry_size(entry)
        guard size <= Self.pooledFileLimit, archive_entry_sparse_count(entry) == 0 else { return nil }
        var data = [UInt8]()
        data.reserveCapacity(Int(size))
        var block: UnsafeRawPointer? = nil
        var blockSize = 0
        var offset: la_int64_t = 0
        while true {
            let rc = archive_read_data_block(archive, &block, &blockSize, &offset)
            if rc == ARCHIVE_EOF { break }
            if rc < ARCHIVE_WARN { throw LayerError(.corruptArchive, TarReader.errorString(archive)) }
            if blockSize == 0 { continue }
            guard Int64(offset) + Int64(blockSize) <= size else { throw LayerError(.corruptArchive, "file data beyond the entry's size") }
            if Int(offset) > data.count { data.append(contentsOf: repeatElement(0, count: Int(offset) - data.count)) }
            data.removeSubrange(Int(offset)...)
            data.append(contentsOf: UnsafeRawBufferPointer(start: block, count: blockSize))
        }
        let createMode = perm & 0o777
        var xattrs: [(name: String, value: [UInt8], kind: String)] = []
        forEachXattr(entry) { name, value, kind in xattrs.append((name, value, kind)) }
        let times = entryTimes(entry)
        return PendingFile(sequence: entryCount, parentFD: parentFD, path: path, data: data, size: size,
                           createMode: createMode, permissions: perm, owner: owner(of: entry), xattrs: xattrs,
                           times: (times.0, times.1), measures: allocated != nil)
    }

    private func writeFileContents(_ fd: Int32, entry: OpaquePointer, archive: OpaquePointer, perm: mode_t, createMode: mode_t,
                                   path: EntryPath) throws(LayerError) {

        // Data, zero-copy from libarchive's buffers; gaps between blocks stay holes.
        let size = archive_entry_size(entry)
        var block: UnsafeRawPointer? = nil
        var blockSize = 0
        var offset: la_int64_t = 0
        var end: Int64 = 0
        while true {
            let rc = archive_read_data_block(archive, &block, &blockSize, &offset)
            if rc == ARCHIVE_EOF { break }
            if rc < ARCHIVE_WARN {
                throw LayerError(.corruptArchive, TarReader.errorString(archive))
            }
            if blockSize == 0 { continue }
            do throws(Errno) { try DataCopy.writeAll(fd, block!, blockSize, at: off_t(offset)) } catch {
                throw .system(error, entry: nil, "cannot write file")
            }
            end = Int64(offset) + Int64(blockSize)
        }
        try RegularFileMetadata.apply(to: fd, written: end, size: size, owner: owner(of: entry), permissions: perm,
                                      createMode: createMode, umask: umask, times: entryTimes(entry)) {
            applyXattrs(entry, path: path) { name, value, size in fsetxattr(fd, name, value, size, 0) }
        }
    }

    // MARK: - Directories

    private func makeDirectory(_ parentFD: Int32, _ path: EntryPath, entry: OpaquePointer, perm: mode_t) throws(LayerError) {
        let name = path.name
        var replacedWhiteout = false
        var overExisting = false
        var rc = withCString(name) { mkdirat(parentFD, $0, 0o700) }
        if rc != 0 && errno == EEXIST {
            let existing = FileSystem.lstat(parentFD, name)
            if let existing, FileSystem.isDirectory(existing) {
                rc = 0  // dir over dir: merge, keep the contents
                overExisting = true
            } else {
                if let existing, overlay != nil, LayerFormat.isWhiteoutDevice(existing) { replacedWhiteout = true }
                try removeExisting(parentFD, name)
                rc = withCString(name) { mkdirat(parentFD, $0, 0o700) }
            }
        }
        guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create directory") }
        let fd = withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open directory") }
        resolver.remember(path, fd)
        self.merged?.invalidate()
        if overExisting { dropStaleXattrs(fd: fd, parentFD: parentFD, name: name, entry: entry) }
        try applyDirMetadata(fd: fd, path: path, entry: entry, perm: perm)
        if replacedWhiteout { try setOpaque(fd, path) }
    }

    /// A dir entry over an existing dir replaces its attributes (image-spec layer.md): xattrs the
    /// entry does not carry go, among those an archive may set (host-only ones such as
    /// `trusted.*` or an SELinux label the archive does not manage are left alone).
    private func dropStaleXattrs(fd: Int32, parentFD: Int32, name: ArraySlice<UInt8>, entry: OpaquePointer) {
        let current = Xattrs.all(fd: fd)
        guard !current.isEmpty else { return }
        var carried = Set<String>()
        if archive_entry_xattr_reset(entry) > 0 {
            var namePtr: UnsafePointer<CChar>? = nil
            var value: UnsafeRawPointer? = nil
            var size = 0
            while archive_entry_xattr_next(entry, &namePtr, &value, &size) == ARCHIVE_OK {
                if let namePtr { carried.insert(String(cString: namePtr)) }
            }
        }
        for attribute in current where options.xattrPolicy.carries(attribute.name) && !carried.contains(attribute.name) {
            fremovexattr(fd, attribute.name)
        }
    }

    private func applyDirMetadata(fd: Int32, path: EntryPath, entry: OpaquePointer, perm: mode_t) throws(LayerError) {
        try setOwner(fd: fd, entry: entry)
        if fchmod(fd, perm) != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chmod directory") }
        applyXattrs(entry, path: path) { name, value, size in fsetxattr(fd, name, value, size, 0) }
        let times = entryTimes(entry)
        dirTimes.append((path, times.0, times.1))
    }

    // MARK: - Links and special files

    private func makeSymlink(_ parentFD: Int32, _ path: EntryPath, target: UnsafePointer<CChar>, entry: OpaquePointer) throws(LayerError) {
        let name = path.name
        var rc = withCString(name) { symlinkat(target, parentFD, $0) }
        if rc != 0 && errno == EEXIST {
            try removeExisting(parentFD, name)
            rc = withCString(name) { symlinkat(target, parentFD, $0) }
        }
        guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create symlink") }
        merged?.invalidate()
        try finishNode(parentFD, path, entry: entry, perm: nil)
    }

    private func makeNode(_ parentFD: Int32, _ path: EntryPath, type: UInt32, entry: OpaquePointer, perm: mode_t) throws(LayerError) {
        let device = type == UInt32(LK_S_IFIFO) ? 0 : try EntryValidator.deviceNumber(of: entry)
        let mode = mode_t(type) | (perm & 0o777)
        let name = path.name
        var rc = withCString(name) { mknodat(parentFD, $0, mode, device) }
        if rc != 0 && errno == EEXIST {
            try removeExisting(parentFD, name)
            rc = withCString(name) { mknodat(parentFD, $0, mode, device) }
        }
        if rc != 0 {
            let err = errno
            if err == EPERM && geteuid() != 0 && type != UInt32(LK_S_IFIFO) {
                warn("entry \"\(path)\": device node skipped (creating devices needs privilege)")
                return
            }
            throw .system(Errno(rawValue: err), entry: nil, "cannot create \(type == UInt32(LK_S_IFIFO) ? "fifo" : "device")")
        }
        try finishNode(parentFD, path, entry: entry, perm: perm)
    }

    /// Owner, mode, xattrs and times of a symlink or node, by name, never following it.
    private func finishNode(_ parentFD: Int32, _ path: EntryPath, entry: OpaquePointer, perm: mode_t?) throws(LayerError) {
        let name = path.name
        let uid = uid_t(truncatingIfNeeded: archive_entry_uid(entry))
        let gid = gid_t(truncatingIfNeeded: archive_entry_gid(entry))
        // Always: a new entry in a setgid dir takes the dir's group, not the caller's.
        if options.preserveOwnership {
            let rc = withCString(name) { fchownat(parentFD, $0, uid, gid, AT_SYMLINK_NOFOLLOW) }
            if rc != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chown") }
        }
        if let perm, perm != perm & 0o777 & ~umask || perm & 0o7000 != 0 {
            // The node was created just now by name in a dir we hold: it is not a symlink.
            let rc = withCString(name) { fchmodat(parentFD, $0, perm, 0) }
            if rc != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chmod") }
        }
        if archive_entry_xattr_count(entry) > 0 {
            let procPath = "/proc/self/fd/\(parentFD)/" + String(decoding: name, as: UTF8.self)
            applyXattrs(entry, path: path) { xname, value, size in lsetxattr(procPath, xname, value, size, 0) }
        }
        let times = entryTimes(entry)
        let rc = withCString(name) { n in withTimes(times) { utimensat(parentFD, n, $0, AT_SYMLINK_NOFOLLOW) } }
        if rc != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot set times") }
        if allocated != nil { count(FileSystem.lstat(parentFD, name)) }
    }

    /// Links `entryPath` to `entryTarget` and returns the path it was made at.
    private func applyHardlink(_ entryPath: EntryPath, target entryTarget: EntryPath) throws(LayerError) -> EntryPath {
        let targetText = entryTarget.description
        guard !entryPath.isRoot else { throw LayerError(.invalidEntry, "the root of the target can only be a directory") }
        var target = entryTarget
        if let merged {
            // Through the stack: a target a lower layer shows is copied up into this layer first.
            guard let found = try merged.locateFile(entryTarget) else {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" not found")
            }
            target = found.path
            if found.layer != 0 {
                stopCounting()
                try merged.copyUp(found.path, from: found.layer)
            }
        }
        let canCopyUp = merged == nil && overlay != nil && !lowers.isEmpty
        let targetParent: Int32
        do throws(LayerError) {
            targetParent = try resolver.directory(target.parent, create: false)
        } catch {
            guard error.errno == .noSuchFileOrDirectory, canCopyUp else {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" not found")
            }
            stopCounting()
            try lowers.copyUp(target, into: resolver)
            targetParent = try resolver.directory(target.parent, create: false)
        }
        let (parentFD, path) = try place(entryPath, create: true)
        noteTouch(path.parent, parentFD)
        let name = path.name
        let targetName = target.name
        func link() -> Int32 {
            withCString(targetName) { t in withCString(name) { n in linkat(targetParent, t, parentFD, n, 0) } }
        }
        var rc = link()
        if rc != 0 && errno == ENOENT && canCopyUp {
            stopCounting()
            try lowers.copyUp(target, into: resolver)
            rc = link()
        }
        if rc != 0 && errno == EEXIST {
            // Linking a name to itself (or to another name of the same inode) changes nothing.
            if let a = FileSystem.lstat(parentFD, name), let b = FileSystem.lstat(targetParent, targetName), FileSystem.sameInode(a, b) {
                return path
            }
            try removeExisting(parentFD, name)
            rc = link()
        }
        if rc != 0 {
            let err = Errno(rawValue: errno)
            if err == .noSuchFileOrDirectory {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" not found")
            }
            if err == .notPermitted, let st = FileSystem.lstat(targetParent, targetName), FileSystem.isDirectory(st) {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" is a directory")
            }
            throw .system(err, entry: nil, "cannot create hardlink to \"\(targetText)\"")
        }
        return path
    }

    // MARK: - Whiteouts

    /// `DIR/.wh..wh..opq`: in overlay format the dir is marked opaque; in plain format what lower
    /// layers put in it goes.
    private func applyOpaqueMarker(in dir: EntryPath) throws(LayerError) {
        if let merged {
            let (fd, canonical) = try merged.directory(dir, create: true)
            try setOpaque(fd, canonical)
            merged.invalidate()
        } else if overlay != nil {
            try setOpaque(try resolver.directory(dir, create: true), dir)
        } else {
            try pruneLower(dir)
        }
    }

    /// `DIR/.wh.NAME`: in overlay format a whiteout device at NAME; in plain format NAME goes.
    private func applyWhiteout(_ entryDir: EntryPath, _ hidden: [UInt8], entry: OpaquePointer) throws(LayerError) {
        var dir = entryDir
        if overlay != nil {
            let parentFD: Int32
            if let merged {
                (parentFD, dir) = try merged.directory(entryDir, create: true)
                merged.invalidate()
            } else {
                parentFD = try resolver.directory(dir, create: true)
            }
            let victim = dir.appending(hidden)
            if wasWritten(victim) {
                // This layer's own entry stays; as a dir it now hides what lower layers have there.
                if let st = FileSystem.lstat(parentFD, hidden), FileSystem.isDirectory(st) {
                    try setOpaque(try resolver.directory(victim, create: false), victim)
                }
                return
            }
            var rc = withCString(hidden) { mknodat(parentFD, $0, LayerFormat.whiteoutDeviceMode, 0) }
            if rc != 0 && errno == EEXIST {
                try removeExisting(parentFD, hidden)
                rc = withCString(hidden) { mknodat(parentFD, $0, LayerFormat.whiteoutDeviceMode, 0) }
            }
            if rc != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot create whiteout device") }
            // The marker's times, so the same layer always gives the same tree.
            _ = withCString(hidden) { n in withTimes(entryTimes(entry)) { utimensat(parentFD, n, $0, AT_SYMLINK_NOFOLLOW) } }
            written.insert(victim)
            return
        }
        // Plain format: remove what lower layers have there (nothing if missing, or a non-dir parent).
        let victim = dir.appending(hidden)
        let parentFD: Int32
        do throws(LayerError) { parentFD = try resolver.directory(dir, create: false) } catch {
            if error.errno == .noSuchFileOrDirectory || error.errno == .notDirectory { return }
            throw error
        }
        if wasWritten(victim) {
            if let st = FileSystem.lstat(parentFD, hidden), FileSystem.isDirectory(st) {
                try pruneLower(victim)
            }
            return
        }
        noteTouch(dir, parentFD)
        try removeExisting(parentFD, hidden)
    }

    /// Plain format, opaque dir: removes everything below `dir` that this layer did not write.
    /// Iterative: the dirs of this layer inside `dir` are visited from a work list.
    private func pruneLower(_ top: EntryPath) throws(LayerError) {
        var work = [top]
        while let dir = work.popLast() {
            let fd: Int32
            do throws(LayerError) { fd = try resolver.directory(dir, create: false) } catch {
                if error.errno == .noSuchFileOrDirectory { continue }
                throw error
            }
            noteTouch(dir, fd)
            let names: [[UInt8]]
            do throws(Errno) { names = try FileSystem.names(of: fd) } catch { throw .system(error, entry: dir.description, "cannot read directory") }
            for child in names {
                let childPath = dir.appending(child)
                if wasWritten(childPath) {
                    if let st = FileSystem.lstat(fd, child), FileSystem.isDirectory(st) { work.append(childPath) }
                } else {
                    try removeExisting(fd, child)
                }
            }
        }
    }

    private func setOpaque(_ fd: Int32, _ path: EntryPath) throws(LayerError) {
        guard let ns = overlay else { return }
        let value = OverlayXattrNamespace.opaqueValue
        let rc = value.withUnsafeBytes { fsetxattr(fd, ns.opaque, $0.baseAddress, $0.count, 0) }
        if rc != 0 {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot mark \"\(path)\" opaque (\(ns.opaque))")
        }
    }

    // MARK: - Metadata helpers

    /// The entry's owner when ownership is applied. Always chowned when it is: a new file in a
    /// setgid dir takes the dir's group, and a dir merged over an existing one takes the entry's owner.
    private func owner(of entry: OpaquePointer) -> (uid: uid_t, gid: gid_t)? {
        guard options.preserveOwnership else { return nil }
        return (uid_t(truncatingIfNeeded: archive_entry_uid(entry)), gid_t(truncatingIfNeeded: archive_entry_gid(entry)))
    }

    private func setOwner(fd: Int32, entry: OpaquePointer) throws(LayerError) {
        guard let (uid, gid) = owner(of: entry) else { return }
        if fchown(fd, uid, gid) != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chown to \(uid):\(gid)") }
    }

    /// Passes (atime, mtime) as the two-element array futimens/utimensat take.
    @inline(__always)
    private func withTimes(_ times: (timespec, timespec), _ body: (UnsafePointer<timespec>) -> Int32) -> Int32 {
        var pair = times
        return withUnsafePointer(to: &pair) { $0.withMemoryRebound(to: timespec.self, capacity: 2, body) }
    }

    private func entryTimes(_ entry: OpaquePointer) -> (timespec, timespec) {
        var mtime = timespec(tv_sec: 0, tv_nsec: lk_utime_omit())
        if archive_entry_mtime_is_set(entry) != 0 {
            mtime = timespec(tv_sec: archive_entry_mtime(entry), tv_nsec: archive_entry_mtime_nsec(entry))
        }
        var atime = mtime
        if archive_entry_atime_is_set(entry) != 0 {
            atime = timespec(tv_sec: archive_entry_atime(entry), tv_nsec: archive_entry_atime_nsec(entry))
        }
        return (atime, mtime)
    }

    /// Sets the entry's xattrs that the policy carries, then its POSIX ACLs given as ACL records
    /// (unless it carries them as `system.posix_acl_*` xattrs already).
    private func applyXattrs(_ entry: OpaquePointer, path: EntryPath, _ set: (UnsafePointer<CChar>, UnsafeRawPointer?, Int) -> Int32) {
        forEachXattr(entry) { name, value, kind in
            let rc = value.withUnsafeBytes { bytes in name.withCString { set($0, bytes.baseAddress, bytes.count) } }
            if rc != 0 { warn("entry \"\(path)\": \(kind) \(name) not applied: \(Errno(rawValue: errno).description)") }
        }
    }

    /// The xattrs of an entry that the policy carries, then its POSIX ACLs given as ACL records
    /// (unless it carries them as `system.posix_acl_*` xattrs already), each with what a warning
    /// calls it.
    private func forEachXattr(_ entry: OpaquePointer, _ body: (_ name: String, _ value: [UInt8], _ kind: String) -> Void) {
        var carried = Set<String>()
        if archive_entry_xattr_reset(entry) > 0 {
            var namePtr: UnsafePointer<CChar>? = nil
            var value: UnsafeRawPointer? = nil
            var size = 0
            while archive_entry_xattr_next(entry, &namePtr, &value, &size) == ARCHIVE_OK {
                guard let namePtr else { continue }
                let name = String(cString: namePtr)
                guard options.xattrPolicy.carries(name) else { continue }
                carried.insert(name)
                body(name, Array(UnsafeRawBufferPointer(start: value, count: value == nil ? 0 : size)), "xattr")
            }
        }
        for isDefault in [false, true] {
            let name = AccessControlList.xattrName(default: isDefault)
            guard !carried.contains(name),
                  let value = AccessControlList.xattrValue(entry, type: isDefault ? ARCHIVE_ENTRY_ACL_TYPE_DEFAULT : ARCHIVE_ENTRY_ACL_TYPE_ACCESS) else { continue }
            body(name, value, "ACL")
        }
    }

    private func warn(_ message: String) {
        warningLog.append((entryCount, message))
        options.logger.warning("\(message)")
    }

    // MARK: - Finishing

    private func noteTouch(_ dir: EntryPath, _ fd: Int32) {
        if dir == lastTouched { return }
        lastTouched = dir
        if touchedDirs[dir] != nil { return }
        if let st = FileSystem.attributes(of: fd) { touchedDirs[dir] = (st.st_atim, st.st_mtim) }
    }

    /// Sets the times of every dir this layer named, now that their contents are final, and
    /// restores those of dirs it changed without naming them.
    func finish() throws(LayerError) {
        try drain()
        if allocated != nil { measureDirectories() }
        let named = Set(dirTimes.map(\.0))
        for (path, times) in touchedDirs where !named.contains(path) {
            let fd = resolver.openUncached(path)
            guard fd >= 0 else { continue }
            _ = withTimes(times) { futimens(fd, $0) }
            close(fd)
        }
        touchedDirs.removeAll()
        var seen = Set<EntryPath>()
        for (path, atime, mtime) in dirTimes.reversed() where seen.insert(path).inserted {
            let fd = resolver.openUncached(path)
            guard fd >= 0 else { continue }  // removed or replaced later in the layer
            _ = withTimes((atime, mtime)) { futimens(fd, $0) }
            close(fd)
        }
        dirTimes.removeAll()
        resolver.closeAll()
    }

    /// Adds the blocks of every dir of the layer, each once: they grow as entries go in, so they
    /// are measured last.
    private func measureDirectories() {
        var seen = Set<InodeKey>()
        func measure(_ fd: Int32) {
            guard fd >= 0 else { return }
            if let st = FileSystem.attributes(of: fd), seen.insert(InodeKey(st)).inserted { count(st) }
            if fd != rootFD { close(fd) }
        }
        measure(rootFD)
        for (path, _, _) in dirTimes { measure(resolver.openUncached(path)) }
        for path in resolver.createdDirectories { measure(FileSystem.openInRoot(rootFD, path, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)) }
        for path in merged?.createdDirectories ?? [] { measure(resolver.openUncached(path)) }
    }

    // MARK: - Removal (never follows symlinks)

    /// Removes whatever is at `name` so a new entry can take its place. Cached dir fds are dropped
    /// when a dir or symlink goes, since paths through it now resolve elsewhere.
    private func removeExisting<Name: Collection>(_ parentFD: Int32, _ name: Name) throws(LayerError) where Name.Element == UInt8 {
        try drain()
        guard let st = FileSystem.lstat(parentFD, name) else { return }
        stopCounting()
        if FileSystem.isDirectory(st) || FileSystem.isSymlink(st) { invalidateResolution() }
        do throws(Errno) { try FileSystem.removeTree(parentFD, name) } catch {
            if error == .resourceBusy {
                throw LayerError(.system(error), "\(String(decoding: Array(name), as: UTF8.self)) is a mount point: not removing what is mounted there")
            }
            throw .system(error, entry: nil, "cannot remove existing entry")
        }
    }
}
