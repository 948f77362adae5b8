import CArchive
import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// One entry as Go's `archive/tar` reads it (what `Reader.Next` returns, with what containerd
/// takes from it: the xattrs of `SCHILY.xattr.*` records), and the check that libarchive read the
/// same header the same way.
///
/// `TarValidator` makes one for every entry libarchive will return (PAX global headers, which Go
/// returns as entries of their own and libarchive folds into the next one, make none), in order.
/// `TarReader` compares each libarchive entry with the next view: where a header says one thing
/// to Go and another to libarchive (an empty PAX `size`, a `+` before a number, a `GNU.sparse.name`
/// without a sparse map, a regular file named `dir/`, `LIBARCHIVE.xattr.*` records, ...), the
/// layer would mean one tree to containerd and another to LayerKit, so it is refused.
struct TarEntryView {
    /// Where the entry's first header (its first PAX or GNU extension header, if any) starts in
    /// the tar stream; libarchive's `archive_read_header_position` for the same entry.
    var headerOffset: Int64
    /// The type flag, with Go's legacy `'\0'` turned into `'0'` or `'5'` (a trailing slash).
    var typeflag: UInt8
    var name: [UInt8]
    var linkname: [UInt8]
    /// The logical size (a sparse file's full size).
    var size: Int64
    var mode: Int64
    var uid: Int64
    var gid: Int64
    var modificationTime: TarSyntax.Timestamp
    /// From a PAX `atime` record (the only access time LayerKit applies).
    var accessTime: TarSyntax.Timestamp? = nil
    var devMajor: Int64
    var devMinor: Int64
    /// `SCHILY.xattr.NAME` records (empty values included, as containerd applies them).
    var xattrs: [[UInt8]: [UInt8]] = [:]
    /// The data fragments of a sparse file (nil for a file whose data is stored whole).
    var sparse: SparseDataMap.Fingerprint?

    /// The type flags Go reads no data for (`isHeaderOnlyType`).
    static func isHeaderOnly(_ typeflag: UInt8) -> Bool {
        (UInt8(ascii: "1")...UInt8(ascii: "6")).contains(typeflag)
    }

    var displayName: String { String(decoding: name, as: UTF8.self) }

    /// Where libarchive's reading of `entry` (whose headers start at `position`) differs from
    /// this one, as `"what: Go's value, libarchive's value"`; nil when they agree.
    func disagreement(with entry: OpaquePointer, position: Int64) -> String? {
        func bytes(_ p: UnsafePointer<CChar>?) -> [UInt8] {
            guard let p else { return [] }
            return p.withMemoryRebound(to: UInt8.self, capacity: strlen(p)) { Array(UnsafeBufferPointer(start: $0, count: strlen(p))) }
        }
        func q(_ b: [UInt8]) -> String { TarSyntax.quoted(b) }
        if position != headerOffset {
            return "the entry's headers start at byte \(headerOffset) for Go, \(position) for libarchive"
        }
        let path = bytes(archive_entry_pathname(entry))
        if path != name { return "path \(q(name)) to Go, \(q(path)) to libarchive" }

        let type = archive_entry_filetype(entry)
        let hardlink = archive_entry_hardlink(entry)
        let symlink = archive_entry_symlink(entry)
        let expected: UInt32?
        switch typeflag {
        case UInt8(ascii: "1"): expected = nil
        case UInt8(ascii: "2"): expected = UInt32(LK_S_IFLNK)
        case UInt8(ascii: "3"): expected = UInt32(LK_S_IFCHR)
        case UInt8(ascii: "4"): expected = UInt32(LK_S_IFBLK)
        case UInt8(ascii: "5"): expected = UInt32(LK_S_IFDIR)
        case UInt8(ascii: "6"): expected = UInt32(LK_S_IFIFO)
        default: expected = UInt32(LK_S_IFREG)  // '0', '7', 'S' and types neither knows: a regular file
        }
        let typeText = TarSyntax.quoted([typeflag])
        if typeflag == UInt8(ascii: "1") {
            guard hardlink != nil else { return "a hardlink to Go, not to libarchive" }
            if bytes(hardlink) != linkname { return "hardlink target \(q(linkname)) to Go, \(q(bytes(hardlink))) to libarchive" }
        } else {
            if hardlink != nil { return "type \(typeText) to Go, a hardlink to libarchive" }
            if let expected, type != expected {
                return "type \(typeText) to Go, file type 0o\(String(type, radix: 8)) to libarchive"
            }
        }
        if typeflag == UInt8(ascii: "2") {
            if bytes(symlink) != linkname { return "symlink target \(q(linkname)) to Go, \(q(bytes(symlink))) to libarchive" }
        } else if symlink != nil {
            return "type \(typeText) to Go, a symlink to libarchive"
        }
        // Go reads no data for header-only types whatever the size says; libarchive must not either.
        let expectedSize = Self.isHeaderOnly(typeflag) ? 0 : size
        if archive_entry_size(entry) != expectedSize {
            return "size \(expectedSize) to Go, \(archive_entry_size(entry)) to libarchive"
        }
        if mode & 0o7777 != Int64(archive_entry_perm(entry) & 0o7777) {
            return "mode 0o\(String(mode & 0o7777, radix: 8)) to Go, 0o\(String(archive_entry_perm(entry) & 0o7777, radix: 8)) to libarchive"
        }
        if uid != archive_entry_uid(entry) { return "uid \(uid) to Go, \(archive_entry_uid(entry)) to libarchive" }
        if gid != archive_entry_gid(entry) { return "gid \(gid) to Go, \(archive_entry_gid(entry)) to libarchive" }
        let mtime = TarSyntax.Timestamp(seconds: Int64(archive_entry_mtime(entry)), nanoseconds: Int64(archive_entry_mtime_nsec(entry)))
        if archive_entry_mtime_nsec(entry) >= 1_000_000_000 || archive_entry_mtime_nsec(entry) < 0 || mtime != modificationTime {
            return "mtime \(modificationTime) to Go, \(archive_entry_mtime(entry))s+\(archive_entry_mtime_nsec(entry))ns to libarchive"
        }
        if let accessTime {
            let atime = TarSyntax.Timestamp(seconds: Int64(archive_entry_atime(entry)), nanoseconds: Int64(archive_entry_atime_nsec(entry)))
            if archive_entry_atime_is_set(entry) == 0 || atime != accessTime {
                return "atime \(accessTime) to Go, \(archive_entry_atime(entry))s+\(archive_entry_atime_nsec(entry))ns to libarchive"
            }
        }
        if typeflag == UInt8(ascii: "3") || typeflag == UInt8(ascii: "4") {
            let major = UInt64(archive_entry_rdevmajor(entry))
            let minor = UInt64(archive_entry_rdevminor(entry))
            if major != UInt64(bitPattern: devMajor) || minor != UInt64(bitPattern: devMinor) {
                return "device \(devMajor),\(devMinor) to Go, \(major),\(minor) to libarchive"
            }
        }
        var libarchiveXattrs: [[UInt8]: [UInt8]] = [:]
        if archive_entry_xattr_reset(entry) > 0 {
            var namePointer: UnsafePointer<CChar>? = nil
            var value: UnsafeRawPointer? = nil
            var length = 0
            while archive_entry_xattr_next(entry, &namePointer, &value, &length) == ARCHIVE_OK {
                libarchiveXattrs[bytes(namePointer)] = value.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            }
        }
        if libarchiveXattrs != xattrs {
            let names = Set(libarchiveXattrs.keys).symmetricDifference(xattrs.keys).first
                ?? libarchiveXattrs.keys.first { libarchiveXattrs[$0] != xattrs[$0] }!
            return "xattr \(q(names)): \(xattrs[names].map { "\($0.count) bytes" } ?? "none") to Go, \(libarchiveXattrs[names].map { "\($0.count) bytes" } ?? "none") to libarchive"
        }
        var libarchiveSparse = SparseDataMap()
        if archive_entry_sparse_reset(entry) > 0 {
            var offset: la_int64_t = 0
            var length: la_int64_t = 0
            while archive_entry_sparse_next(entry, &offset, &length) == ARCHIVE_OK {
                libarchiveSparse.add(offset: Int64(offset), length: Int64(length))
            }
        }
        let theirs = libarchiveSparse.fingerprint(size: archive_entry_size(entry))
        var dense = SparseDataMap()
        let ours = sparse ?? dense.fingerprint(size: size)
        if theirs != ours {
            return "sparse map of \(ours.count) data fragments to Go, \(theirs.count) to libarchive"
        }
        return nil
    }
}

/// The data fragments of a sparse file, in the normal form libarchive lists them in (empty
/// fragments dropped, adjacent ones joined, one fragment covering the whole file meaning "not
/// sparse"), reduced to a count and a SHA-256 so a map of millions of fragments costs no memory.
struct SparseDataMap {
    struct Fingerprint: Equatable {
        var count: Int
        var digest: Digest?
    }

    private var pending: (offset: Int64, length: Int64)?
    private var first: (offset: Int64, length: Int64)?
    private var count = 0
    private var hasher: SHA256Hasher?

    mutating func add(offset: Int64, length: Int64) {
        guard length > 0 else { return }
        if let p = pending, p.offset &+ p.length == offset {
            pending = (p.offset, p.length &+ length)
            return
        }
        flush()
        pending = (offset, length)
    }

    private mutating func flush() {
        guard var p = pending else { return }
        pending = nil
        if first == nil { first = p }
        count += 1
        if hasher == nil { hasher = SHA256Hasher() }
        withUnsafeBytes(of: &p.offset) { hasher!.update($0) }
        withUnsafeBytes(of: &p.length) { hasher!.update($0) }
    }

    /// The map, for a file of `size` bytes.
    mutating func fingerprint(size: Int64) -> Fingerprint {
        flush()
        if count == 0 { return Fingerprint(count: 0, digest: nil) }
        if count == 1, let first, first.offset == 0, first.length >= size { return Fingerprint(count: 0, digest: nil) }
        return Fingerprint(count: count, digest: hasher?.finalize())
    }
}
