/// The header of one tar entry as the diff engine writes it.
struct TarHeader {
    enum Kind: UInt8 {
        case file = 0x30      // '0'
        case hardlink = 0x31  // '1'
        case symlink = 0x32   // '2'
        case char = 0x33      // '3'
        case block = 0x34     // '4'
        case dir = 0x35       // '5'
        case fifo = 0x36      // '6'
    }
    var kind: Kind
    /// Path inside the layer, without a leading slash (dirs get a trailing one when written).
    var path: [UInt8]
    var linkTarget: [UInt8] = []
    var mode: UInt32 = 0o644
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var size: Int64 = 0
    var mtime: Int64 = 0
    var mtimeNsec: Int = 0
    var devMajor: UInt32 = 0
    var devMinor: UInt32 = 0
    var xattrs: [Xattrs.Attribute] = []
    /// For sparse files: the data regions (offset, length) and the full size; `size` is then
    /// the size of the map block plus the data (GNU sparse format 1.0, in PAX records).
    var sparse: (map: [(Int64, Int64)], realSize: Int64)? = nil
}
