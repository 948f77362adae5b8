import CArchive
#if canImport(Glibc)
import Glibc
#endif

/// POSIX ACLs carried as libarchive ACL records (`SCHILY.acl.access` / `SCHILY.acl.default` in
/// PAX headers, as GNU tar and bsdtar write them), turned into the `system.posix_acl_*` xattrs
/// the kernel takes (Docker and containerd carry the binary xattrs themselves; both are applied).
enum AccessControlList {
    /// The xattr name for an ACL type.
    static func xattrName(default isDefault: Bool) -> String {
        isDefault ? "system.posix_acl_default" : "system.posix_acl_access"
    }

    /// The ACL of `type` (`ARCHIVE_ENTRY_ACL_TYPE_ACCESS` or `_DEFAULT`) in the kernel's xattr form
    /// (`posix_acl_xattr`: a version header, then tag/permissions/id entries in the kernel's order);
    /// nil when the entry has none beyond its mode bits.
    static func xattrValue(_ entry: OpaquePointer, type: Int32) -> [UInt8]? {
        guard archive_entry_acl_reset(entry, type) > 0 else { return nil }
        var entries = [(tag: UInt16, permissions: UInt16, id: UInt32)]()
        var entryType: Int32 = 0, permset: Int32 = 0, tag: Int32 = 0, qualifier: Int32 = 0
        var name: UnsafePointer<CChar>? = nil
        while archive_entry_acl_next(entry, type, &entryType, &permset, &tag, &qualifier, &name) == ARCHIVE_OK {
            let kernelTag: UInt16
            switch tag {
            case ARCHIVE_ENTRY_ACL_USER_OBJ: kernelTag = 0x01
            case ARCHIVE_ENTRY_ACL_USER: kernelTag = 0x02
            case ARCHIVE_ENTRY_ACL_GROUP_OBJ: kernelTag = 0x04
            case ARCHIVE_ENTRY_ACL_GROUP: kernelTag = 0x08
            case ARCHIVE_ENTRY_ACL_MASK: kernelTag = 0x10
            case ARCHIVE_ENTRY_ACL_OTHER: kernelTag = 0x20
            default: continue   // NFSv4 entries have no POSIX form
            }
            let named = kernelTag == 0x02 || kernelTag == 0x08
            guard !named || qualifier >= 0 else { continue }
            let id = named ? UInt32(qualifier) : UInt32.max
            guard !entries.contains(where: { $0.tag == kernelTag && $0.id == id }) else { continue }
            entries.append((kernelTag, UInt16(permset & 0o7), id))
        }
        // An access ACL of only the owner, group and other entries is the mode: nothing to set.
        guard entries.contains(where: { ![0x01, 0x04, 0x20].contains($0.tag) }) else { return nil }
        // A named entry needs a mask; the kernel wants them ordered by tag, then id.
        if entries.contains(where: { $0.tag == 0x02 || $0.tag == 0x08 }) && !entries.contains(where: { $0.tag == 0x10 }) {
            let union = entries.filter { [0x02, 0x04, 0x08].contains($0.tag) }.reduce(UInt16(0)) { $0 | $1.permissions }
            entries.append((0x10, union, UInt32.max))
        }
        entries.sort { ($0.tag, $0.id) < ($1.tag, $1.id) }
        var bytes = [UInt8]()
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        append(UInt32(2))   // POSIX_ACL_XATTR_VERSION
        for entry in entries {
            append(entry.tag)
            append(entry.permissions)
            append(entry.id)
        }
        return bytes
    }
}
