/// How a layer blob is compressed, as told by its first bytes (never by its name).
public enum Compression: String, Sendable, Codable, CaseIterable {
    case none
    case gzip
    case zstd

    /// The number of leading bytes `detect` wants to see (fewer is fine at end of input): a
    /// whole tar header block, so an empty tar (zero blocks) and old v7 headers are recognised.
    public static let magicLength = 512

    /// Detects the format from the first bytes of a blob.
    ///
    /// - gzip: `1f 8b 08`.
    /// - zstd: frame magic `28 b5 2f fd`, or a skippable frame `5X 2a 4d 18` (X = 0...F) in front of one.
    /// - tar: `ustar` at offset 257, or a header block whose checksum is right (old v7 tar),
    ///   or an all-zero first block (an empty archive).
    /// - zero bytes: an empty layer, reported as `.none`.
    /// Returns nil when the bytes are none of these.
    public static func detect(_ prefix: UnsafeRawBufferPointer) -> Compression? {
        let n = prefix.count
        if n == 0 { return Compression.none }
        if n >= 3, prefix[0] == 0x1f, prefix[1] == 0x8b, prefix[2] == 0x08 { return .gzip }
        if n >= 4, prefix[0] == 0x28, prefix[1] == 0xb5, prefix[2] == 0x2f, prefix[3] == 0xfd { return .zstd }
        if n >= 4, prefix[0] & 0xF0 == 0x50, prefix[1] == 0x2a, prefix[2] == 0x4d, prefix[3] == 0x18 { return .zstd }
        if looksLikeTar(prefix) { return Compression.none }
        return nil
    }

    /// Media type suffix used in OCI descriptors for this compression.
    public var mediaTypeSuffix: String {
        switch self {
        case .none: return ""
        case .gzip: return "+gzip"
        case .zstd: return "+zstd"
        }
    }

    static func looksLikeTar(_ p: UnsafeRawBufferPointer) -> Bool {
        if p.count >= 262, p[257] == UInt8(ascii: "u"), p[258] == UInt8(ascii: "s"), p[259] == UInt8(ascii: "t"),
           p[260] == UInt8(ascii: "a"), p[261] == UInt8(ascii: "r") {
            return true
        }
        guard p.count >= 512 else { return false }
        // An empty archive starts with zero blocks.
        if p[0..<512].allSatisfy({ $0 == 0 }) { return true }
        // v7 header: verify the checksum field (offset 148, 8 octal bytes; computed with the field as spaces).
        var sum = 0
        for i in 0..<512 { sum += (148..<156).contains(i) ? 32 : Int(p[i]) }
        var stored = 0
        var digits = 0
        for i in 148..<156 {
            let c = p[i]
            if c == 0 || c == 32 { if digits > 0 { break } else { continue } }
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "7") else { return false }
            stored = stored * 8 + Int(c - UInt8(ascii: "0"))
            digits += 1
        }
        return digits > 0 && stored == sum
    }
}
