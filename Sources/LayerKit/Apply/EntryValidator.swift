import CArchive
import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// What an archive alone can get wrong in an entry, checked by the same code before anything is
/// written (`Unpacker`'s first pass over a non-empty destination, `layertool inspect`) and while
/// an entry is applied.
enum EntryValidator {
    /// The longest path an entry may have, in bytes: the kernel's `PATH_MAX` less its NUL. A
    /// longer one could not be named in any single call (containerd fails on it the same way).
    static let maximumPathLength = Int(PATH_MAX) - 1

    /// The entry's name, cleaned (`..` resolved lexically, absolute names re-rooted), and the
    /// name as the archive gives it, for messages.
    static func path(of entry: OpaquePointer) throws(LayerError) -> (path: EntryPath, display: String) {
        guard let raw = archive_entry_pathname(entry) else { throw LayerError(.invalidEntry, "entry without a name") }
        let length = strlen(raw)
        let display = String(decoding: UnsafeRawBufferPointer(start: raw, count: length), as: UTF8.self)
        let cleaned = raw.withMemoryRebound(to: UInt8.self, capacity: length) {
            EntryPath.clean(UnsafeBufferPointer(start: $0, count: length))
        }
        guard let path = cleaned else { throw LayerError(.pathEscapes, entry: display, "path escapes the target") }
        guard path.bytes.count <= maximumPathLength else {
            throw LayerError(.invalidEntry, entry: String(display.prefix(64)) + "...", "path longer than \(maximumPathLength) bytes")
        }
        return (path, display)
    }

    /// The target of a hardlink entry, cleaned: it must name something inside the target, not
    /// the root itself (absolute targets are re-rooted).
    static func hardlinkTarget(_ raw: UnsafePointer<CChar>) throws(LayerError) -> EntryPath {
        let length = strlen(raw)
        let cleaned = raw.withMemoryRebound(to: UInt8.self, capacity: length) {
            EntryPath.clean(UnsafeBufferPointer(start: $0, count: length))
        }
        guard let target = cleaned, !target.isRoot, target.bytes.count <= maximumPathLength else {
            throw LayerError(.pathEscapes, "hardlink target \"\(String(cString: raw))\" escapes the target")
        }
        return target
    }

    /// The root can only be given a directory's metadata.
    static func checkRoot(_ path: EntryPath, type: UInt32) throws(LayerError) {
        if path.isRoot && type != UInt32(LK_S_IFDIR) {
            throw LayerError(.invalidEntry, "the root of the target can only be a directory")
        }
    }

    /// A device entry's number, which must fit the kernel's 32-bit major and minor.
    static func deviceNumber(of entry: OpaquePointer) throws(LayerError) -> dev_t {
        let major = UInt64(archive_entry_rdevmajor(entry))
        let minor = UInt64(archive_entry_rdevminor(entry))
        guard major <= UInt64(UInt32.max), minor <= UInt64(UInt32.max) else {
            throw LayerError(.invalidEntry, "device number \(major):\(minor) is out of range")
        }
        return dev_t(lk_makedev(UInt32(major), UInt32(minor)))
    }

    /// Checks an entry without touching the file system: the name, a whiteout's name, a
    /// hardlink's target, the root's type, a device's number.
    static func preflight(_ entry: OpaquePointer) throws(LayerError) {
        let (path, display) = try path(of: entry)
        do throws(LayerError) {
            if case .invalidWhiteout = LayerFormat.marker(path.name) {
                throw LayerError(.invalidEntry, "invalid whiteout name")
            }
            if let target = archive_entry_hardlink(entry) {
                _ = try hardlinkTarget(target)
                guard !path.isRoot else { throw LayerError(.invalidEntry, "the root of the target can only be a directory") }
                return
            }
            let type = archive_entry_filetype(entry)
            try checkRoot(path, type: type)
            if type == UInt32(LK_S_IFCHR) || type == UInt32(LK_S_IFBLK) { _ = try deviceNumber(of: entry) }
        } catch var error {
            if error.entry == nil { error.entry = display }
            throw error
        }
    }
}
