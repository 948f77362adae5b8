import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// The markers of the OCI layer format (image-spec `layer.md`) and overlayfs's on-disk form of
/// the same ideas, named once for apply, diff, the union, the store and mounts.
///
/// In a layer tarball (and in an aufs-form upper dir), `DIR/.wh.NAME` deletes `DIR/NAME` from the
/// layers below and `DIR/.wh..wh..opq` hides everything they have in `DIR`. In overlayfs's own
/// format a deletion is a character device 0/0 at the name and an opaque dir carries the
/// `opaque` xattr of an `OverlayXattrNamespace`.
public enum LayerFormat {
    /// `.wh.`: the prefix of a whiteout entry.
    public static let whiteoutPrefix: [UInt8] = Array(".wh.".utf8)
    /// `.wh..wh..opq`: the opaque marker.
    public static let opaqueMarker: [UInt8] = Array(".wh..wh..opq".utf8)
    /// `.wh..wh.`: aufs's bookkeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`), the opaque marker among them.
    static let metadataPrefix: [UInt8] = Array(".wh..wh.".utf8)

    /// What a name found in a layer (or in an aufs-form upper dir) stands for.
    public enum Marker: Equatable, Sendable {
        /// An ordinary entry.
        case none
        /// `.wh..wh..opq`: the dir is opaque.
        case opaque
        /// `.wh.NAME`: NAME is deleted.
        case whiteout(hidden: [UInt8])
        /// Another `.wh..wh.` name: aufs bookkeeping, not content.
        case aufsMetadata
        /// `.wh.`, `.wh..` or `.wh...`: a whiteout without a name it could hide.
        case invalidWhiteout
    }

    /// Classifies the last component of a path.
    public static func marker<Name: Collection>(_ name: Name) -> Marker where Name.Element == UInt8 {
        guard name.starts(with: whiteoutPrefix) else { return .none }
        if name.elementsEqual(opaqueMarker) { return .opaque }
        if name.starts(with: metadataPrefix) { return .aufsMetadata }
        let hidden = name.dropFirst(whiteoutPrefix.count)
        if hidden.isEmpty || hidden.elementsEqual([UInt8(ascii: ".")]) || hidden.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
            return .invalidWhiteout
        }
        return .whiteout(hidden: Array(hidden))
    }

    /// Whether a name is reserved for markers (starts with `.wh.`).
    public static func isMarkerName<Name: Collection>(_ name: Name) -> Bool where Name.Element == UInt8 {
        name.starts(with: whiteoutPrefix)
    }

    /// `.wh.NAME`.
    public static func whiteoutName<Name: Collection>(for name: Name) -> [UInt8] where Name.Element == UInt8 {
        whiteoutPrefix + Array(name)
    }

    /// overlayfs's whiteout: a character device with device number 0/0.
    public static func isWhiteoutDevice(_ st: stat) -> Bool {
        st.st_mode & mode_t(LK_S_IFMT) == mode_t(LK_S_IFCHR) && st.st_rdev == 0
    }

    /// The mode to `mknod` an overlayfs whiteout with (device 0/0).
    static let whiteoutDeviceMode = mode_t(LK_S_IFCHR)
}
