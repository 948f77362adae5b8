import CArchive
import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes the entries of one tar stream onto a target directory.
///
/// Every path is resolved as if the target were the root: parents are opened with
/// `openat2(RESOLVE_IN_ROOT)`, and every change is an fd-relative `*at` call on the final
/// component, never following a symlink there. So `..`, absolute names and symlinks pointing
/// anywhere can only reach inside the target.
final class ApplyEngine {
    private let rootFD: Int32
    private let options: ApplyOptions
    private let overlay: ApplyOptions.OverlayXattrNamespace?
    private let umask: mode_t
    private let euid: uid_t

    /// Open dirs by path (a small cache: tar streams are mostly grouped by dir).
    private var dirCache: [EntryPath: Int32] = [:]
    private static let dirCacheLimit = 128
    /// Fds dropped from the cache while the current entry may still use them; closed before the next.
    private var retiredDirs: [Int32] = []

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

    private(set) var warnings: [String] = []
    private(set) var entryCount = 0

    init(rootFD: Int32, options: ApplyOptions) {
        self.rootFD = rootFD
        self.options = options
        if case .overlay(let ns) = options.format { overlay = ns } else { overlay = nil }
        self.umask = ApplyEngine.currentUmask()
        self.euid = geteuid()
    }

    deinit { closeCachedDirs() }

    // MARK: - Entries

    /// Applies one entry whose header was just read from `archive`; its data is read here.
    func apply(_ entry: OpaquePointer, from archive: OpaquePointer) throws(LayerError) {
        entryCount += 1
        if !retiredDirs.isEmpty {
            for fd in retiredDirs { close(fd) }
            retiredDirs.removeAll(keepingCapacity: true)
        }
        guard let rawName = archive_entry_pathname(entry) else {
            throw LayerError(.invalidEntry, "entry without a name")
        }
        let nameLength = strlen(rawName)
        let cleaned = rawName.withMemoryRebound(to: UInt8.self, capacity: nameLength) {
            EntryPath.clean(UnsafeBufferPointer(start: $0, count: nameLength))
        }
        let display = String(decoding: UnsafeRawBufferPointer(start: rawName, count: nameLength), as: UTF8.self)
        guard let path = cleaned else {
            throw LayerError(.pathEscapes, entry: display, "path escapes the target")
        }
        do throws(LayerError) {
            try applyEntry(entry, path: path, archive: archive)
        } catch var error {
            if error.entry == nil { error.entry = display }
            throw error
        }
    }

    private func applyEntry(_ entry: OpaquePointer, path: EntryPath, archive: OpaquePointer) throws(LayerError) {
        let name = path.name
        // Whiteouts and opaque markers.
        if name.starts(with: Self.whiteoutPrefix) {
            try applyWhiteout(path, entry: entry)
            return
        }
        if let target = archive_entry_hardlink(entry) {
            try applyHardlink(path, target: target)
            noteWritten(path)
            return
        }
        let type = archive_entry_filetype(entry)
        let perm = mode_t(archive_entry_perm(entry)) & 0o7777
        if path.isRoot {
            guard type == UInt32(LK_S_IFDIR) else {
                throw LayerError(.invalidEntry, "the root of the target can only be a directory")
            }
            try applyDirMetadata(fd: rootFD, path: path, entry: entry, perm: perm)
            return
        }
        let parentFD = try openDir(path.parent, create: true)
        noteTouch(path.parent, parentFD)
        switch type {
        case UInt32(LK_S_IFREG):
            try writeFile(parentFD, path, entry: entry, archive: archive, perm: perm)
        case UInt32(LK_S_IFDIR):
            try makeDir(parentFD, path, entry: entry, perm: perm)
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

    /// Checks an entry without touching the file system: what `apply` would reject from the
    /// archive alone (escaping names and link targets, bad whiteouts, out-of-range devices).
    static func preflight(_ entry: OpaquePointer) throws(LayerError) {
        guard let rawName = archive_entry_pathname(entry) else { throw LayerError(.invalidEntry, "entry without a name") }
        let display = String(cString: rawName)
        guard let path = EntryPath.clean(display) else {
            throw LayerError(.pathEscapes, entry: display, "path escapes the target")
        }
        let name = path.name
        if name.starts(with: whiteoutPrefix) && !name.starts(with: metaPrefix) {
            let hidden = name.dropFirst(whiteoutPrefix.count)
            if hidden.isEmpty || hidden.elementsEqual([UInt8(ascii: ".")]) || hidden.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                throw LayerError(.invalidEntry, entry: display, "invalid whiteout name")
            }
        }
        if let target = archive_entry_hardlink(entry) {
            let text = String(cString: target)
            guard let t = EntryPath.clean(text), !t.isRoot else {
                throw LayerError(.pathEscapes, entry: display, "hardlink target \"\(text)\" escapes the target")
            }
            return
        }
        let type = archive_entry_filetype(entry)
        if path.isRoot && type != UInt32(LK_S_IFDIR) {
            throw LayerError(.invalidEntry, entry: display, "the root of the target can only be a directory")
        }
        if type == UInt32(LK_S_IFCHR) || type == UInt32(LK_S_IFBLK) {
            if UInt64(archive_entry_rdevmajor(entry)) > UInt64(UInt32.max) || UInt64(archive_entry_rdevminor(entry)) > UInt64(UInt32.max) {
                throw LayerError(.invalidEntry, entry: display, "device number is out of range")
            }
        }
    }

    // MARK: - Regular files

    private func writeFile(_ parentFD: Int32, _ path: EntryPath, entry: OpaquePointer, archive: OpaquePointer, perm: mode_t) throws(LayerError) {
        let name = path.name
        let createMode = perm & 0o777
        var fd = withCString(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, createMode) }
        if fd < 0 && errno == EEXIST {
            try removeTree(parentFD, path.name)
            fd = withCString(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, createMode) }
        }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create file") }
        defer { close(fd) }

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
                throw LayerError(.corruptArchive, TarStream.errorString(archive))
            }
            if blockSize == 0 { continue }
            var done = 0
            while done < blockSize {
                let n = pwrite(fd, block! + done, blockSize - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .system(Errno(rawValue: errno), entry: nil, "cannot write file")
                }
                done += n
            }
            end = Int64(offset) + Int64(blockSize)
        }
        if end < size {
            if ftruncate(fd, off_t(size)) != 0 {
                throw .system(Errno(rawValue: errno), entry: nil, "cannot extend sparse file")
            }
        }
        try setOwner(fd: fd, entry: entry)
        // chown clears setuid/setgid, so a mode with them is always set again after it.
        if perm != createMode & ~umask || perm & 0o6000 != 0 {
            if fchmod(fd, perm) != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chmod") }
        }
        applyXattrs(entry, path: path) { name, value, size in fsetxattr(fd, name, value, size, 0) }
        let times = entryTimes(entry)
        if withTimes(times, { futimens(fd, $0) }) != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot set times") }
    }

    // MARK: - Directories

    private func makeDir(_ parentFD: Int32, _ path: EntryPath, entry: OpaquePointer, perm: mode_t) throws(LayerError) {
        let name = path.name
        var replacedWhiteout = false
        var merged = false
        var rc = withCString(name) { mkdirat(parentFD, $0, 0o700) }
        if rc != 0 && errno == EEXIST {
            let existing = lstatAt(parentFD, name)
            if let existing, existing.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFDIR) {
                rc = 0  // dir over dir: merge, keep the contents
                merged = true
            } else {
                if let existing, overlay != nil, isOverlayWhiteout(existing) { replacedWhiteout = true }
                try removeTree(parentFD, path.name)
                rc = withCString(name) { mkdirat(parentFD, $0, 0o700) }
            }
        }
        guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create directory") }
        let fd = withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open directory") }
        cacheDir(path, fd)
        if merged { dropStaleXattrs(fd: fd, parentFD: parentFD, name: name, entry: entry) }
        try applyDirMetadata(fd: fd, path: path, entry: entry, perm: perm)
        if replacedWhiteout { try setOpaque(fd, path) }
    }

    /// A dir entry over an existing dir replaces its attributes (image-spec layer.md): xattrs the
    /// entry does not carry go, among those an archive may set (host-only ones such as
    /// `trusted.*` or an SELinux label the archive does not manage are left alone).
    private func dropStaleXattrs(fd: Int32, parentFD: Int32, name: ArraySlice<UInt8>, entry: OpaquePointer) {
        let current = ChangeSet.allXattrs(parentFD, name)
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
        for (key, _) in current where options.appliesXattr(key) && !carried.contains(key) {
            fremovexattr(fd, key)
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
            try removeTree(parentFD, path.name)
            rc = withCString(name) { symlinkat(target, parentFD, $0) }
        }
        guard rc == 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create symlink") }
        try finishNode(parentFD, path, entry: entry, perm: nil)
    }

    private func makeNode(_ parentFD: Int32, _ path: EntryPath, type: UInt32, entry: OpaquePointer, perm: mode_t) throws(LayerError) {
        var device: UInt64 = 0
        if type != UInt32(LK_S_IFIFO) {
            let major = UInt64(archive_entry_rdevmajor(entry))
            let minor = UInt64(archive_entry_rdevminor(entry))
            guard major <= UInt64(UInt32.max), minor <= UInt64(UInt32.max) else {
                throw LayerError(.invalidEntry, "device number \(major):\(minor) is out of range")
            }
            device = lk_makedev(UInt32(major), UInt32(minor))
        }
        let mode = mode_t(type) | (perm & 0o777)
        let name = path.name
        var rc = withCString(name) { mknodat(parentFD, $0, mode, dev_t(device)) }
        if rc != 0 && errno == EEXIST {
            try removeTree(parentFD, path.name)
            rc = withCString(name) { mknodat(parentFD, $0, mode, dev_t(device)) }
        }
        if rc != 0 {
            let err = errno
            if err == EPERM && euid != 0 && type != UInt32(LK_S_IFIFO) {
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
    }

    private func applyHardlink(_ path: EntryPath, target rawTarget: UnsafePointer<CChar>) throws(LayerError) {
        let length = strlen(rawTarget)
        let cleaned = rawTarget.withMemoryRebound(to: UInt8.self, capacity: length) {
            EntryPath.clean(UnsafeBufferPointer(start: $0, count: length))
        }
        let targetText = String(cString: rawTarget)
        guard let target = cleaned, !target.isRoot else {
            throw LayerError(.pathEscapes, "hardlink target \"\(targetText)\" escapes the target")
        }
        guard !path.isRoot else { throw LayerError(.invalidEntry, "the root of the target can only be a directory") }
        let targetParent: Int32
        do throws(LayerError) {
            targetParent = try openDir(target.parent, create: false)
        } catch {
            if case .system(let e) = error.kind, e == .noSuchFileOrDirectory, overlay != nil, !options.lowerDirs.isEmpty {
                try copyUpFromLower(target)
                targetParent = try openDir(target.parent, create: false)
            } else {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" not found")
            }
        }
        let parentFD = try openDir(path.parent, create: true)
        noteTouch(path.parent, parentFD)
        let name = path.name
        let targetName = target.name
        func link() -> Int32 {
            withCString(targetName) { t in withCString(name) { n in linkat(targetParent, t, parentFD, n, 0) } }
        }
        var rc = link()
        if rc != 0 && errno == ENOENT && overlay != nil && !options.lowerDirs.isEmpty {
            try copyUpFromLower(target)
            rc = link()
        }
        if rc != 0 && errno == EEXIST {
            // Linking a name to itself (or to another name of the same inode) changes nothing.
            if let a = lstatAt(parentFD, name), let b = lstatAt(targetParent, targetName),
               a.st_ino == b.st_ino, a.st_dev == b.st_dev {
                return
            }
            try removeTree(parentFD, path.name)
            rc = link()
        }
        if rc != 0 {
            let err = Errno(rawValue: errno)
            if err == .noSuchFileOrDirectory {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" not found")
            }
            if err == .notPermitted, let st = lstatAt(targetParent, targetName), st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFDIR) {
                throw LayerError(.invalidEntry, "hardlink target \"\(targetText)\" is a directory")
            }
            throw .system(err, entry: nil, "cannot create hardlink to \"\(targetText)\"")
        }
    }

    // MARK: - Whiteouts

    static let whiteoutPrefix: [UInt8] = Array(".wh.".utf8)
    static let opaqueMarker: [UInt8] = Array(".wh..wh..opq".utf8)
    static let metaPrefix: [UInt8] = Array(".wh..wh.".utf8)

    private func applyWhiteout(_ path: EntryPath, entry: OpaquePointer) throws(LayerError) {
        let name = path.name
        let dir = path.parent
        if name.elementsEqual(Self.opaqueMarker) {
            if let ns = overlay {
                _ = ns
                let fd = try openDir(dir, create: true)
                try setOpaque(fd, dir)
            } else {
                try pruneLower(dir)
            }
            return
        }
        if name.starts(with: Self.metaPrefix) {
            // Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): not content.
            return
        }
        let hidden = name.dropFirst(Self.whiteoutPrefix.count)
        if hidden.isEmpty || hidden.elementsEqual([UInt8(ascii: ".")]) || hidden.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
            throw LayerError(.invalidEntry, "invalid whiteout name")
        }
        let victim = dir.appending(hidden)
        if let ns = overlay {
            _ = ns
            let parentFD = try openDir(dir, create: true)
            if wasWritten(victim) {
                // This layer's own entry stays; as a dir it now hides what lower layers have there.
                if let st = lstatAt(parentFD, hidden), st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFDIR) {
                    let fd = try openDir(victim, create: false)
                    try setOpaque(fd, victim)
                }
                return
            }
            var rc = withCString(hidden) { mknodat(parentFD, $0, mode_t(LK_S_IFCHR), 0) }
            if rc != 0 && errno == EEXIST {
                try removeTree(parentFD, hidden)
                rc = withCString(hidden) { mknodat(parentFD, $0, mode_t(LK_S_IFCHR), 0) }
            }
            if rc != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot create whiteout device") }
            // The marker's times, so the same layer always gives the same tree.
            _ = withCString(hidden) { n in withTimes(entryTimes(entry)) { utimensat(parentFD, n, $0, AT_SYMLINK_NOFOLLOW) } }
            written.insert(victim)
            return
        }
        // Plain format: remove what lower layers have there (nothing if missing, or a non-dir parent).
        let parentFD: Int32
        do throws(LayerError) { parentFD = try openDir(dir, create: false) } catch {
            if case .system(let e) = error.kind, e == .noSuchFileOrDirectory || e == .notDirectory { return }
            throw error
        }
        if wasWritten(victim) {
            if let st = lstatAt(parentFD, hidden), st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFDIR) {
                try pruneLower(victim)
            }
            return
        }
        noteTouch(dir, parentFD)
        try removeTree(parentFD, hidden)
    }

    /// Plain format, opaque dir: removes everything below `dir` that this layer did not write.
    private func pruneLower(_ dir: EntryPath) throws(LayerError) {
        let fd: Int32
        do throws(LayerError) { fd = try openDir(dir, create: false) } catch {
            if case .system(let e) = error.kind, e == .noSuchFileOrDirectory { return }
            throw error
        }
        noteTouch(dir, fd)
        for child in try listDir(fd) {
            let childPath = dir.appending(child)
            if wasWritten(childPath) {
                if let st = lstatAt(fd, child[...]), st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFDIR) {
                    try pruneLower(childPath)
                }
            } else {
                try removeTree(fd, child[...])
            }
        }
    }

    private func setOpaque(_ fd: Int32, _ path: EntryPath) throws(LayerError) {
        guard let ns = overlay else { return }
        let rc = fsetxattr(fd, ns.opaqueName, "y", 1, 0)
        if rc != 0 {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot mark \"\(path)\" opaque (\(ns.opaqueName))")
        }
    }

    private func isOverlayWhiteout(_ st: stat) -> Bool {
        st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFCHR) && st.st_rdev == 0
    }

    // MARK: - Copy-up for overlay-format layers

    /// Copies `path` (a regular file) from the topmost lower layer that has it into this layer,
    /// creating its parents with their lower metadata, so a hardlink can point at it.
    private func copyUpFromLower(_ path: EntryPath) throws(LayerError) {
        for lower in options.lowerDirs {
            let lowerRoot = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard lowerRoot >= 0 else { continue }
            defer { close(lowerRoot) }
            let src = path.withCString { lk_openat2(lowerRoot, $0, UInt64(O_RDONLY | O_NOFOLLOW | O_CLOEXEC), 0, UInt64(LK_RESOLVE_IN_ROOT)) }
            guard src >= 0 else { continue }
            defer { close(src) }
            var st = stat()
            guard fstat(src, &st) == 0, st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFREG) else { continue }
            let parentFD = try openDir(path.parent, create: true)
            let dst = withCString(path.name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
            guard dst >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot copy up from lower layer") }
            defer { close(dst) }
            var remaining = Int(st.st_size)
            while remaining > 0 {
                let n = lk_copy_file_range(src, dst, remaining)
                if n <= 0 { throw .system(Errno(rawValue: errno), entry: path.description, "cannot copy up from lower layer") }
                remaining -= n
            }
            _ = fchown(dst, st.st_uid, st.st_gid)
            _ = fchmod(dst, st.st_mode & 0o7777)
            _ = withTimes((st.st_atim, st.st_mtim)) { futimens(dst, $0) }
            return
        }
        throw LayerError(.invalidEntry, entry: path.description, "hardlink target not found in this layer or below")
    }

    // MARK: - Metadata helpers

    private func setOwner(fd: Int32, entry: OpaquePointer) throws(LayerError) {
        guard options.preserveOwnership else { return }
        let uid = uid_t(truncatingIfNeeded: archive_entry_uid(entry))
        let gid = gid_t(truncatingIfNeeded: archive_entry_gid(entry))
        // Always: a new file in a setgid dir takes the dir's group, and a dir merged over an
        // existing one takes the entry's owner.
        if fchown(fd, uid, gid) != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chown to \(uid):\(gid)") }
    }

    /// Passes (atime, mtime) as the two-element array futimens/utimensat take.
    @inline(__always)
    private func withTimes(_ times: (timespec, timespec), _ body: (UnsafePointer<timespec>) -> Int32) -> Int32 {
        var pair = times
        return withUnsafePointer(to: &pair) { $0.withMemoryRebound(to: timespec.self, capacity: 2, body) }
    }

    private func entryTimes(_ entry: OpaquePointer) -> (timespec, timespec) {
        let omit = lk_utime_omit()
        var mtime = timespec(tv_sec: 0, tv_nsec: omit)
        if archive_entry_mtime_is_set(entry) != 0 {
            mtime = timespec(tv_sec: archive_entry_mtime(entry), tv_nsec: archive_entry_mtime_nsec(entry))
        }
        var atime = mtime
        if archive_entry_atime_is_set(entry) != 0 {
            atime = timespec(tv_sec: archive_entry_atime(entry), tv_nsec: archive_entry_atime_nsec(entry))
        }
        return (atime, mtime)
    }

    private func applyXattrs(_ entry: OpaquePointer, path: EntryPath, _ set: (UnsafePointer<CChar>, UnsafeRawPointer?, Int) -> Int32) {
        guard archive_entry_xattr_reset(entry) > 0 else { return }
        var namePtr: UnsafePointer<CChar>? = nil
        var value: UnsafeRawPointer? = nil
        var size = 0
        while archive_entry_xattr_next(entry, &namePtr, &value, &size) == ARCHIVE_OK {
            guard let namePtr else { continue }
            let name = String(cString: namePtr)
            guard options.appliesXattr(name) else { continue }
            if set(namePtr, value, size) != 0 {
                warn("entry \"\(path)\": xattr \(name) not applied: \(Errno(rawValue: errno).description)")
            }
        }
    }

    private func warn(_ message: String) { warnings.append(message) }

    // MARK: - Finishing

    private func noteTouch(_ dir: EntryPath, _ fd: Int32) {
        if dir == lastTouched { return }
        lastTouched = dir
        if touchedDirs[dir] != nil { return }
        var st = stat()
        if fstat(fd, &st) == 0 { touchedDirs[dir] = (st.st_atim, st.st_mtim) }
    }

    /// Sets the times of every dir this layer named, now that their contents are final, and
    /// restores those of dirs it changed without naming them.
    func finish() throws(LayerError) {
        let named = Set(dirTimes.map(\.0))
        for (path, times) in touchedDirs where !named.contains(path) {
            let fd = path.isRoot ? rootFD : path.withCString {
                lk_openat2(rootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), 0, UInt64(LK_RESOLVE_IN_ROOT))
            }
            guard fd >= 0 else { continue }
            _ = withTimes(times) { futimens(fd, $0) }
            if fd != rootFD { close(fd) }
        }
        touchedDirs.removeAll()
        var seen = Set<EntryPath>()
        for (path, atime, mtime) in dirTimes.reversed() where seen.insert(path).inserted {
            let times = (atime, mtime)
            if path.isRoot {
                _ = withTimes(times) { futimens(rootFD, $0) }
                continue
            }
            let fd = path.withCString {
                lk_openat2(rootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), 0, UInt64(LK_RESOLVE_IN_ROOT))
            }
            guard fd >= 0 else { continue }  // removed or replaced later in the layer
            _ = withTimes(times) { futimens(fd, $0) }
            close(fd)
        }
        dirTimes.removeAll()
        closeCachedDirs()
    }

    // MARK: - Resolution (confined to the target)

    /// An fd for the directory at `path`, resolved with the target as root. With `create`,
    /// missing dirs are made (0755, owned by the caller), through symlinks that point inside.
    private func openDir(_ path: EntryPath, create: Bool, depth: Int = 0) throws(LayerError) -> Int32 {
        if path.isRoot { return rootFD }
        if let fd = dirCache[path] { return fd }
        guard depth < 40 else { throw LayerError(.system(.tooManySymbolicLinkLevels), "too many levels of symbolic links resolving \"\(path)\"") }
        let fd = path.withCString {
            lk_openat2(rootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, UInt64(LK_RESOLVE_IN_ROOT | LK_RESOLVE_NO_MAGICLINKS))
        }
        if fd >= 0 {
            cacheDir(path, fd)
            return fd
        }
        let err = Errno(rawValue: errno)
        switch err {
        case .noSuchFileOrDirectory where create:
            try makeDirs(path.bytes, depth: depth)
            return try openDir(path, create: false, depth: depth)
        case .notDirectory:
            throw LayerError(.system(err), "a parent of the entry is not a directory (\"\(path)\")")
        default:
            throw .system(err, entry: nil, "cannot open parent directory \"\(path)\"")
        }
    }

    /// Makes the directory `raw` (a path the kernel resolves inside the root) and any missing
    /// parents, 0755. A dangling symlink on the way is followed the way the kernel would follow it:
    /// its target is made, relative to where the link really is (absolute targets from the root).
    private func makeDirs(_ raw: [UInt8], depth: Int) throws(LayerError) {
        guard depth < 40 else {
            throw LayerError(.system(.tooManySymbolicLinkLevels), "too many levels of symbolic links creating \"\(String(decoding: raw, as: UTF8.self))\"")
        }
        let display = String(decoding: raw, as: UTF8.self)
        let fd = Self.openInRoot(rootFD, raw)
        if fd >= 0 { close(fd); return }
        guard errno == ENOENT else {
            let e = Errno(rawValue: errno)
            if e == .notDirectory { throw LayerError(.system(e), "a parent of the entry is not a directory (\"\(display)\")") }
            throw .system(e, entry: nil, "cannot open parent directory \"\(display)\"")
        }
        var trimmed = raw[...]
        while trimmed.count > 1, trimmed.last == UInt8(ascii: "/") { trimmed = trimmed.dropLast() }
        let parent: [UInt8]
        let last: ArraySlice<UInt8>
        if let slash = trimmed.lastIndex(of: UInt8(ascii: "/")) {
            parent = slash == trimmed.startIndex ? [UInt8(ascii: "/")] : Array(trimmed[..<slash])
            last = trimmed[(slash + 1)...]
        } else {
            parent = [UInt8(ascii: ".")]
            last = trimmed
        }
        try makeDirs(parent, depth: depth)
        if last.isEmpty || last.elementsEqual([UInt8(ascii: ".")]) || last.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
            return
        }
        let parentFD = Self.openInRoot(rootFD, parent)
        guard parentFD >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot open parent directory \"\(display)\"") }
        defer { close(parentFD) }
        if withCString(last, { mkdirat(parentFD, $0, 0o755) }) == 0 || errno != EEXIST { return }
        guard let st = lstatAt(parentFD, last), FS.fileType(st) == mode_t(LK_S_IFLNK) else { return }
        var buffer = [UInt8](repeating: 0, count: 4097)
        let n = withCString(last) { readlinkat(parentFD, $0, &buffer, 4096) }
        guard n > 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot read symlink in \"\(display)\"") }
        let target = Array(buffer[..<n])
        if target.first == UInt8(ascii: "/") {
            try makeDirs(target, depth: depth + 1)
        } else {
            try makeDirs(try realPathInRoot(parentFD) + [UInt8(ascii: "/")] + target, depth: depth + 1)
        }
    }

    static func openInRoot(_ rootFD: Int32, _ raw: [UInt8]) -> Int32 {
        withCString(raw.isEmpty ? [UInt8(ascii: ".")] : raw) {
            lk_openat2(rootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, UInt64(LK_RESOLVE_IN_ROOT | LK_RESOLVE_NO_MAGICLINKS))
        }
    }

    private lazy var rootRealPath: [UInt8] = Self.fdPath(rootFD)

    /// Where an open dir really is, as a path from the root ("/" for the root itself).
    private func realPathInRoot(_ fd: Int32) throws(LayerError) -> [UInt8] {
        let real = Self.fdPath(fd)
        let root = rootRealPath
        guard real.starts(with: root) else { throw LayerError(.pathEscapes, "a directory resolved outside the target") }
        let rest = Array(real[root.count...])
        return rest.isEmpty ? [UInt8(ascii: "/")] : (rest.first == UInt8(ascii: "/") ? rest : [UInt8(ascii: "/")] + rest)
    }

    static func fdPath(_ fd: Int32) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4097)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, 4096)
        guard n > 0 else { return [] }
        var path = Array(buffer[..<n])
        if path == [UInt8(ascii: "/")] { path = [] }
        return path
    }

    private func cacheDir(_ path: EntryPath, _ fd: Int32) {
        if dirCache.count >= Self.dirCacheLimit { invalidateDirCache() }
        if let old = dirCache.updateValue(fd, forKey: path) { retiredDirs.append(old) }
    }

    /// Forgets every cached dir; the fds stay open until the current entry is done.
    private func invalidateDirCache() {
        retiredDirs.append(contentsOf: dirCache.values)
        dirCache.removeAll(keepingCapacity: true)
    }

    private func closeCachedDirs() {
        invalidateDirCache()
        for fd in retiredDirs { close(fd) }
        retiredDirs.removeAll()
    }

    // MARK: - Removal (never follows symlinks)

    /// Removes whatever is at `name` so a new entry can take its place. A dir over a dir is kept
    /// when `keepingDir`. Cached dir fds are dropped when a dir or symlink goes, since paths
    /// through it now resolve elsewhere.
    private func removeTree(_ parentFD: Int32, _ name: ArraySlice<UInt8>) throws(LayerError) {
        guard let st = FS.lstat(parentFD, name) else { return }
        let type = FS.fileType(st)
        if type == mode_t(LK_S_IFDIR) || type == mode_t(LK_S_IFLNK) { invalidateDirCache() }
        try FS.removeTree(parentFD, name)
    }

    private func listDir(_ fd: Int32) throws(LayerError) -> [[UInt8]] { try FS.listDir(fd) }

    private func lstatAt(_ dirFD: Int32, _ name: ArraySlice<UInt8>) -> stat? { FS.lstat(dirFD, name) }

    static func currentUmask() -> mode_t {
        // Reading the umask without changing it: /proc/self/status has it since Linux 4.7.
        if let f = fopen("/proc/self/status", "r") {
            defer { fclose(f) }
            var line = [CChar](repeating: 0, count: 256)
            while fgets(&line, 256, f) != nil {
                let s = String(cString: line)
                if s.hasPrefix("Umask:") {
                    let v = s.dropFirst(6).trimmingCharacters(in: " \t\n")
                    return mode_t(v, radix: 8) ?? 0o022
                }
            }
        }
        return 0o022
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = self[...]
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
