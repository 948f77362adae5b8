import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

// Entries that outlive their last name. On overlayfs a file unlinked or renamed over while it is
// open stays readable, writable and stat-able through its fd, its data goes nowhere visible, and
// close() answers 0; an open dir (or a cwd) removed stays stat-able and lists empty. The kernel
// goes on addressing such an entry by its inode number — getattr, setattr (fchmod, ftruncate,
// and, with the writeback cache, the times it keeps, written back right after the unlink: a
// failure there is answered at close() as EIO), a reopen through /proc/self/fd, xattrs — so the
// union keeps an O_PATH fd on the backing entry, opened just before its last name goes, until
// the kernel forgets the node. Nothing is left in the upper or the work dir, even after a crash.
//
// A held entry that is still in a lower layer cannot change: that would need a copy-up with no
// name to land on, and overlayfs refuses it (EEXIST: its copy-up finds the whiteout at the
// name). The union refuses it the same way, except a change of the times alone, which is how
// the kernel writes back the times it keeps; it is taken without effect.
extension UnionFileSystem {
    /// With the mutex held, just before the last name of `node` (at `path` in its layer) is
    /// removed or replaced in the backing layers: an O_PATH fd on the backing entry when the
    /// kernel still holds the node, nil when nothing will address it again. Hand it to `detach`
    /// once the name is gone (or close it if the removal failed).
    func holdBeforeLastName(_ node: UnionNode, at path: [UInt8], _ operation: String) throws(UnionError) -> Int32? {
        guard node.names.count == 1, node.lookups > 0, node.heldFD == nil else { return nil }
        let fd = withCString(path) { openat(layers.fds[node.layer], $0, lk_o_path() | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw .last(operation + ": keep the open entry", path) }
        return fd
    }

    /// How errors name a held entry: it has no path any more.
    private func heldName(_ node: UnionNode) -> [UInt8] { Array("#\(node.ino) (removed)".utf8) }

    /// `/proc/self/fd/N` of a held entry: the kernel resolves it to the entry itself (a symlink
    /// is not followed further), for the calls that have no fd-relative empty-path form.
    private func procPath(_ fd: Int32) -> [UInt8] { Array("/proc/self/fd/\(fd)".utf8) }

    /// A change to a held entry that is still in a lower layer: refused, as overlayfs does.
    private func refuseIfLower(_ node: UnionNode, _ operation: String) throws(UnionError) {
        if node.layer != UnionLayerStack.upper {
            throw .with(EEXIST, operation + " (a removed lower entry cannot be copied up)", heldName(node))
        }
    }

    func heldStat(_ node: UnionNode, _ held: Int32, _ operation: String) throws(UnionError) -> stat {
        var st = Glibc.stat()
        guard fstatat(held, "", &st, lk_at_empty_path() | AT_SYMLINK_NOFOLLOW) == 0 else { throw .last(operation, heldName(node)) }
        st.st_ino = ino_t(node.ino)
        return st
    }

    /// Opens a held file again (`open("/proc/self/fd/N")` by a caller).
    func openHeld(_ node: UnionNode, _ held: Int32, flags: Int32) throws(UnionError) -> Int32 {
        guard !node.isDirectory else { throw .with(EISDIR, "open", heldName(node)) }
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 { try refuseIfLower(node, "open") }
        let openFlags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW)) | O_CLOEXEC
        let fd = withCString(procPath(held)) { openat(AT_FDCWD, $0, openFlags) }
        guard fd >= 0 else { throw .last("open", heldName(node)) }
        return fd
    }

    /// `setAttributes` for a held entry. `fd`, when given, is a handle open for writing on it.
    func setHeldAttributes(_ node: UnionNode, _ held: Int32, _ change: UnionAttributeChange, fd: Int32?) throws(UnionError) -> stat {
        let name = heldName(node)
        let timesOnly = change.mode == nil && change.uid == nil && change.gid == nil && change.size == nil
        if timesOnly && node.layer != UnionLayerStack.upper { return try heldStat(node, held, "setattr") }
        try refuseIfLower(node, "setattr")
        let proc = procPath(held)
        if change.uid != nil || change.gid != nil {
            let uid = change.uid ?? uid_t.max, gid = change.gid ?? gid_t.max
            if fchownat(held, "", uid, gid, lk_at_empty_path() | AT_SYMLINK_NOFOLLOW) != 0 { throw .last("chown", name) }
        }
        if let mode = change.mode, node.type != mode_t(LK_S_IFLNK) {
            if withCString(proc, { chmod($0, mode & 0o7777) }) != 0 { throw .last("chmod", name) }
        }
        if let size = change.size {
            guard !node.isDirectory else { throw .with(EISDIR, "truncate", name) }
            if let fd, ftruncate(fd, off_t(size)) == 0 {
            } else if withCString(proc, { truncate($0, off_t(size)) }) != 0 {
                throw .last("truncate", name)
            }
        }
        if change.accessTime != nil || change.modificationTime != nil {
            let omit = timespec(tv_sec: 0, tv_nsec: lk_utime_omit())
            var times = [change.accessTime ?? omit, change.modificationTime ?? omit]
            if utimensat(held, "", &times, lk_at_empty_path() | AT_SYMLINK_NOFOLLOW) != 0 { throw .last("utimes", name) }
        }
        return try heldStat(node, held, "setattr")
    }

    func readHeldLink(_ node: UnionNode, _ held: Int32) throws(UnionError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = buffer.withUnsafeMutableBytes { readlinkat(held, "", $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        guard n >= 0 else { throw .last("readlink", heldName(node)) }
        return Array(buffer[..<n])
    }

    // MARK: Extended attributes (through /proc/self/fd/N: the `l*` calls would act on the link)

    func heldXattr(_ node: UnionNode, _ held: Int32, name: String) throws(UnionError) -> [UInt8] {
        let value = withCString(procPath(held)) { p in
            Self.readGrowing { getxattr(p, name, $0, $1) }
        }
        guard let value else { throw .last("getxattr \(name)", heldName(node)) }
        return value
    }

    func heldXattrNames(_ node: UnionNode, _ held: Int32) throws(UnionError) -> [String] {
        let list = withCString(procPath(held)) { p in
            Self.readGrowing { listxattr(p, $0?.assumingMemoryBound(to: CChar.self), $1) }
        }
        guard let list else {
            if errno == ENOTSUP { return [] }
            throw .last("listxattr", heldName(node))
        }
        return list.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    func setHeldXattr(_ node: UnionNode, _ held: Int32, name: String, value: [UInt8], flags: Int32) throws(UnionError) {
        try refuseIfLower(node, "setxattr \(name)")
        let rc = value.withUnsafeBytes { v in withCString(procPath(held)) { setxattr($0, name, v.baseAddress, v.count, flags) } }
        if rc != 0 { throw .last("setxattr \(name)", heldName(node)) }
    }

    func removeHeldXattr(_ node: UnionNode, _ held: Int32, name: String) throws(UnionError) {
        try refuseIfLower(node, "removexattr \(name)")
        if withCString(procPath(held), { removexattr($0, name) }) != 0 { throw .last("removexattr \(name)", heldName(node)) }
    }

    /// Reads a value whose size the kernel tells (`get(nil, 0)`), growing the buffer while it
    /// answers ERANGE; nil with `errno` set on another failure.
    private static func readGrowing(_ get: (UnsafeMutableRawPointer?, Int) -> Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = buffer.withUnsafeMutableBytes { get($0.baseAddress, $0.count) }
            if n >= 0 { return Array(buffer[..<n]) }
            guard errno == ERANGE else { return nil }
            let needed = get(nil, 0)
            guard needed >= 0 else { return nil }
            buffer = [UInt8](repeating: 0, count: needed + 1)
        }
    }
}
