import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A regular file read whole out of the archive, waiting to be created by a worker of a
/// `FileCreationPool`: everything the apply engine would do with the entry, decided already
/// (name, parent dir, mode, owner, xattrs, times), so creating it needs no archive state.
struct PendingFile {
    /// The entry's number in the layer: warnings and the first failure are reported in archive order.
    var sequence: Int
    /// The dir the file goes into; it stays open until the pool has drained.
    var parentFD: Int32
    /// Where the file goes, in the layer (for the file's own name and for messages).
    var path: EntryPath
    var data: [UInt8]
    /// The entry's size (the data may be shorter only if the archive left a hole at the end).
    var size: Int64
    var createMode: mode_t
    var permissions: mode_t
    /// Set when the archive's owner is applied.
    var owner: (uid: uid_t, gid: gid_t)?
    /// The xattrs to set, each with what a warning calls it ("xattr", or "ACL" for ACL records).
    var xattrs: [(name: String, value: [UInt8], kind: String)]
    var times: (access: timespec, modification: timespec)
    /// Whether the bytes it takes on disk are counted.
    var measures: Bool

    /// What creating it gave: the blocks it takes (when measured) and the warnings it raised.
    struct Outcome {
        var allocatedBytes: Int64 = 0
        var warnings: [String] = []
    }

    /// Creates the file under its name in its parent, exclusively (the engine made sure nothing of
    /// this layer is there), and gives it its data and metadata in the order the serial path does.
    func create(umask: mode_t) throws(LayerError) -> Outcome {
        let fd = withCString(path.name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, createMode) }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: nil, "cannot create file") }
        // A file that could not be completed is removed, as on the engine's own path.
        var complete = false
        defer {
            close(fd)
            if !complete { withCString(path.name) { _ = unlinkat(parentFD, $0, 0) } }
        }
        if !data.isEmpty {
            let failure: Errno? = data.withUnsafeBytes { bytes in
                do throws(Errno) {
                    try DataCopy.writeAll(fd, bytes.baseAddress!, bytes.count, at: nil)
                    return nil
                } catch {
                    return error
                }
            }
            if let failure { throw .system(failure, entry: nil, "cannot write file") }
        }
        var outcome = Outcome()
        try RegularFileMetadata.apply(to: fd, written: Int64(data.count), size: size, owner: owner, permissions: permissions,
                                      createMode: createMode, umask: umask, times: (times.access, times.modification)) {
            for (name, value, kind) in xattrs {
                let rc = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
                if rc != 0 {
                    outcome.warnings.append("entry \"\(path)\": \(kind) \(name) not applied: \(Errno(rawValue: errno).description)")
                }
            }
        }
        if measures, let st = FileSystem.attributes(of: fd) { outcome.allocatedBytes = Int64(st.st_blocks) * 512 }
        complete = true
        return outcome
    }
}
