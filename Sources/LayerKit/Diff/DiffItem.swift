#if canImport(Glibc)
import Glibc
#endif

/// One thing a layer will say: an entry (with the metadata it has in the new tree), a whiteout
/// of a name, or an opaque marker on a dir.
struct DiffItem {
    enum Kind { case node, whiteout, opaque }
    var kind: Kind
    var path: EntryPath
    var st = stat()
    var linkTarget: [UInt8] = []
    /// Only for the root item; the others' are read when written.
    var xattrs: [Xattrs.Attribute] = []
    /// The entry's parent dir, open, when the walker hands the item over while it is in that dir
    /// (valid only during that call); -1 otherwise (the writer opens the parent by path).
    var parentFD: Int32 = -1
}

/// An inode of the new tree (for hardlink groups).
struct InodeKey: Hashable {
    let dev: UInt64
    let ino: UInt64
    init(_ st: stat) {
        dev = UInt64(st.st_dev)
        ino = UInt64(st.st_ino)
    }
}
