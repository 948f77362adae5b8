/// Where the changes of a new layer come from.
public enum ChangeSource: Sendable {
    /// Two full trees: the layer turns OLD into NEW.
    case trees(old: String, new: String)
    /// An upper dir: kernel overlayfs's (char device 0/0 whiteouts, `*.overlay.opaque` dirs) or the
    /// aufs form the userspace fallback writes (`.wh.NAME`, `.wh..wh..opq`); both are read.
    ///
    /// `lowerRoot`, the top lower layer (any dir whose root looks as the image's root does), tells
    /// whether the container changed its `/`: the upper dir's root is the merged root, so when its
    /// owner, mode or xattrs differ from `lowerRoot`'s, the layer gets the root's own entry.
    /// Without it the root's entry is left out.
    case upper(String, lowerRoot: String? = nil)
}
