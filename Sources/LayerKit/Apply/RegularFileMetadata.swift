import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What follows a regular file's data, for the engine's own writes and the pool's alike, in the
/// order that keeps every effect: the size (a hole at the end), the owner, the mode (set again
/// after a chown that cleared setuid/setgid), the xattrs, and the times last.
enum RegularFileMetadata {
    static func apply(to fd: Int32, written: Int64, size: Int64, owner: (uid: uid_t, gid: gid_t)?,
                      permissions: mode_t, createMode: mode_t, umask: mode_t,
                      times: (timespec, timespec), xattrs: () -> Void) throws(LayerError) {
        if written < size, ftruncate(fd, off_t(size)) != 0 {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot extend sparse file")
        }
        if let owner, !alreadyOwned(fd, by: owner), fchown(fd, owner.uid, owner.gid) != 0 {
            throw .system(Errno(rawValue: errno), entry: nil, "cannot chown to \(owner.uid):\(owner.gid)")
        }
        if permissions != createMode & ~umask || permissions & 0o6000 != 0 {
            if fchmod(fd, permissions) != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot chmod") }
        }
        xattrs()
        var pair = times
        let rc = withUnsafePointer(to: &pair) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) } }
        if rc != 0 { throw .system(Errno(rawValue: errno), entry: nil, "cannot set times") }
    }

    /// Whether a file this process just created already has `owner`: the usual case of root
    /// applying root's files, where a chown would only cost an inode update in the journal. Asked
    /// of the file itself (a setgid parent dir gives its group), and only when the owner is the
    /// process's own.
    private static func alreadyOwned(_ fd: Int32, by owner: (uid: uid_t, gid: gid_t)) -> Bool {
        guard owner.uid == processOwner.uid && owner.gid == processOwner.gid else { return false }
        var st = stat()
        return fstat(fd, &st) == 0 && st.st_uid == owner.uid && st.st_gid == owner.gid
    }

    private static let processOwner = (uid: geteuid(), gid: getegid())
}
