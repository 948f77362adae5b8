/// Short names for layers, as overlay2 makes them: 26 characters of base32 (`A-Z`, `2-7`) from
/// 16 random bytes. A mount option listing many lower dirs as `l/<short>` stays well under the
/// page-size limit of mount data, where 64-character chainID paths would not.
enum ShortLink {
    static let length = 26
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// A new random name.
    static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        var bits: UInt64 = 0
        var available = 0
        var out = [UInt8]()
        out.reserveCapacity(length)
        while out.count < length {
            if available < 5 {
                bits = rng.next()
                available = 64
            }
            out.append(alphabet[Int(bits & 31)])
            bits >>= 5
            available -= 5
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `name` has the form of a short name (so cleanup touches nothing else).
    static func isValid(_ name: String) -> Bool {
        name.utf8.count == length && name.utf8.allSatisfy { alphabet.contains($0) }
    }
}
