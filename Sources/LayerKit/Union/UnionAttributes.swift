import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// A metadata change (`setattr`): each field that is set is applied; times may be UTIME_NOW.
public struct UnionAttributeChange: Sendable {
    public var mode: mode_t?
    public var uid: uid_t?
    public var gid: gid_t?
    public var size: Int64?
    public var accessTime: timespec?
    public var modificationTime: timespec?
    public init(mode: mode_t? = nil, uid: uid_t? = nil, gid: gid_t? = nil, size: Int64? = nil,
                accessTime: timespec? = nil, modificationTime: timespec? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.accessTime = accessTime
        self.modificationTime = modificationTime
    }
}

extension UnionFileSystem {
    /// Opens a file for I/O: writing or truncating copies a lower file up first. The caller owns
    /// the returned fd (reads and writes go straight to it, without the union's lock).
    public func open(_ ino: UInt64, flags: Int32) throws(UnionError) -> Int32 {
        try openFile(ino, flags: flags).fd
    }

    /// `open`, also telling whether the fd is on the upper. A read-only fd on a lower file goes
    /// stale once the file is copied up: `isInUpper` tells when to open it again.
    public func openFile(_ ino: UInt64, flags: Int32) throws(UnionError) -> (fd: Int32, inUpper: Bool) {
        try mutex.locked { () throws(UnionError) -> (fd: Int32, inUpper: Bool) in
            let node = try node(ino, "open")
            if let held = node.heldFD { return (try openHeld(node, held, flags: flags), node.layer == UnionLayerStack.upper) }
            guard !node.isDirectory else { throw .with(EISDIR, "open", try linkedPath(node, "open")) }
            if flags & O_TRUNC != 0 && flags & O_ACCMODE != O_RDONLY {
                try copyUp(node, withoutData: true)   // the content is about to go: copy only the metadata
            } else if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 {
                try copyUp(node)
            }
            let path = try linkedPath(node, "open")   // after the copy-up, which may release the mutex
            let openFlags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW | O_CLOEXEC
            let fd = withCString(path) { openat(layers.fds[node.layer], $0, openFlags) }
            guard fd >= 0 else { throw .last("open", path) }
            return (fd, node.layer == UnionLayerStack.upper)
        }
    }

    /// Whether an inode lives in the upper now (copied up or created there).
    public func isInUpper(_ ino: UInt64) -> Bool {
        mutex.locked { nodes[ino]?.layer == UnionLayerStack.upper }
    }

    /// Changes metadata or size (copying the entry up first). `fd`, when given, is a handle open
    /// for writing on the file (ftruncate).
    public func setAttributes(_ ino: UInt64, _ change: UnionAttributeChange, fd: Int32? = nil) throws(UnionError) -> stat {
        try mutex.locked { () throws(UnionError) -> stat in
            let node = try node(ino, "setattr")
            if let held = node.heldFD { return try setHeldAttributes(node, held, change, fd: fd) }
            try copyUp(node)
            let path = try linkedPath(node, "setattr")
            let upper = layers.fds[UnionLayerStack.upper]
            if change.uid != nil || change.gid != nil {
                let uid = change.uid ?? uid_t.max, gid = change.gid ?? gid_t.max
                if withCString(path, { fchownat(upper, $0, uid, gid, AT_SYMLINK_NOFOLLOW) }) != 0 { throw .last("chown", path) }
            }
            if let mode = change.mode, node.type != mode_t(LK_S_IFLNK) {
                if withCString(path, { fchmodat(upper, $0, mode & 0o7777, 0) }) != 0 { throw .last("chmod", path) }
            }
            if let size = change.size {
                guard !node.isDirectory else { throw .with(EISDIR, "truncate", path) }
                if let fd, ftruncate(fd, off_t(size)) == 0 {
                } else {
                    let tfd = withCString(path) { openat(upper, $0, O_WRONLY | O_NOFOLLOW | O_CLOEXEC) }
                    guard tfd >= 0 else { throw .last("truncate", path) }
                    defer { close(tfd) }
                    if ftruncate(tfd, off_t(size)) != 0 { throw .last("truncate", path) }
                }
            }
            if change.accessTime != nil || change.modificationTime != nil {
                let omit = timespec(tv_sec: 0, tv_nsec: lk_utime_omit())
                var times = [change.accessTime ?? omit, change.modificationTime ?? omit]
                if withCString(path, { utimensat(upper, $0, &times, AT_SYMLINK_NOFOLLOW) }) != 0 { throw .last("utimes", path) }
            }
            return try stat(of: node, path: path, "setattr")
        }
    }

    // MARK: Extended attributes

    /// One xattr; overlayfs's own (`trusted.overlay.*`, `user.overlay.*`) are never shown.
    public func getXattr(_ ino: UInt64, name: String) throws(UnionError) -> [UInt8] {
        try mutex.locked { () throws(UnionError) -> [UInt8] in
            let node = try node(ino, "getxattr")
            if OverlayXattrNamespace.isOverlayXattr(name) { throw .with(ENODATA, "getxattr \(name)", node.path ?? []) }
            if let held = node.heldFD { return try heldXattr(node, held, name: name) }
            let path = try linkedPath(node, "getxattr")
            guard let value = Xattrs.value(atPath: FileSystem.absolute(layers.roots[node.layer], path), name) else {
                throw .last("getxattr \(name)", path)
            }
            return value
        }
    }

    /// The xattr names a reader may see.
    public func listXattrs(_ ino: UInt64) throws(UnionError) -> [String] {
        try mutex.locked { () throws(UnionError) -> [String] in
            let node = try node(ino, "listxattr")
            if let held = node.heldFD { return try heldXattrNames(node, held).filter { !OverlayXattrNamespace.isOverlayXattr($0) } }
            let path = try linkedPath(node, "listxattr")
            guard let names = Xattrs.names(atPath: FileSystem.absolute(layers.roots[node.layer], path)) else {
                throw .last("listxattr", path)
            }
            return names.filter { !OverlayXattrNamespace.isOverlayXattr($0) }
        }
    }

    /// Sets an xattr (copying the entry up). overlayfs's own names are refused with EPERM.
    public func setXattr(_ ino: UInt64, name: String, value: [UInt8], flags: Int32) throws(UnionError) {
        try mutex.locked { () throws(UnionError) in
            let node = try node(ino, "setxattr")
            if OverlayXattrNamespace.isOverlayXattr(name) { throw .with(EPERM, "setxattr \(name)", node.path ?? []) }
            if let held = node.heldFD { return try setHeldXattr(node, held, name: name, value: value, flags: flags) }
            try copyUp(node)
            let path = try linkedPath(node, "setxattr")
            let rc = value.withUnsafeBytes { v in
                withCString(FileSystem.absolute(layers.roots[UnionLayerStack.upper], path)) { lsetxattr($0, name, v.baseAddress, v.count, flags) }
            }
            if rc != 0 { throw .last("setxattr \(name)", path) }
        }
    }

    /// Removes an xattr (copying the entry up). overlayfs's own names are refused with EPERM.
    public func removeXattr(_ ino: UInt64, name: String) throws(UnionError) {
        try mutex.locked { () throws(UnionError) in
            let node = try node(ino, "removexattr")
            if OverlayXattrNamespace.isOverlayXattr(name) { throw .with(EPERM, "removexattr \(name)", node.path ?? []) }
            if let held = node.heldFD { return try removeHeldXattr(node, held, name: name) }
            let before = try linkedPath(node, "removexattr")
            // Nothing to remove: answer without copying up.
            if Xattrs.value(atPath: FileSystem.absolute(layers.roots[node.layer], before), name) == nil { throw .last("removexattr \(name)", before) }
            try copyUp(node)
            let path = try linkedPath(node, "removexattr")
            if withCString(FileSystem.absolute(layers.roots[UnionLayerStack.upper], path), { lremovexattr($0, name) }) != 0 {
                throw .last("removexattr \(name)", path)
            }
        }
    }
}
