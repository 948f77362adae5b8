/// Where the changes of a new layer come from.
public enum ChangeSource: Sendable {
    /// Two full trees: the layer turns OLD into NEW.
    case trees(old: String, new: String)
    /// An upper dir: kernel overlayfs's (char device 0/0 whiteouts, `*.overlay.opaque` dirs) or the
    /// aufs form the userspace fallback writes (`.wh.NAME`, `.wh..wh..opq`); both are read.
    case upper(String)
}
