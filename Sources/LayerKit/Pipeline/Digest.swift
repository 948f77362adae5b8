import Crypto

/// A content digest in the OCI form `sha256:<64 lowercase hex digits>`.
///
/// Only SHA-256 is supported: it is the only algorithm the OCI image spec requires,
/// and the one every registry and runtime uses for layers.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The 32 raw bytes of the SHA-256 value.
    public let bytes: [UInt8]

    /// Wraps 32 raw SHA-256 bytes.
    public init(sha256 bytes: [UInt8]) {
        precondition(bytes.count == 32, "a SHA-256 digest has 32 bytes")
        self.bytes = bytes
    }

    /// Parses `sha256:<hex>`, strictly: lowercase hex, exactly 64 digits, no spaces.
    public init(parsing text: String) throws(DigestError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw DigestError(text: text, reason: "missing the \"algorithm:\" prefix (expected sha256:<64 hex digits>)")
        }
        let algorithm = text[..<colon]
        guard algorithm == "sha256" else {
            throw DigestError(text: text, reason: "unsupported algorithm \"\(algorithm)\" (only sha256 is supported)")
        }
        let hex = text.utf8[text.utf8.index(after: colon)...]
        guard hex.count == 64 else {
            throw DigestError(text: text, reason: "expected 64 hex digits after \"sha256:\", found \(hex.count) characters")
        }
        var out = [UInt8]()
        out.reserveCapacity(32)
        var high: UInt8 = 0
        for (i, c) in hex.enumerated() {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            default:
                throw DigestError(text: text, reason: "invalid character at position \(i + 7): only lowercase hex digits are allowed")
            }
            if i % 2 == 0 { high = v } else { out.append(high << 4 | v) }
        }
        self.bytes = out
    }

    /// The lowercase hex form of the digest value, without the algorithm prefix.
    public var hex: String {
        let table = Array("0123456789abcdef".utf8)
        var chars = [UInt8]()
        chars.reserveCapacity(64)
        for b in bytes {
            chars.append(table[Int(b >> 4)])
            chars.append(table[Int(b & 0xF)])
        }
        return String(decoding: chars, as: UTF8.self)
    }

    /// The algorithm name; always `sha256`.
    public var algorithm: String { "sha256" }

    /// `sha256:<hex>`.
    public var description: String { "sha256:" + hex }

    /// The digest of a byte sequence held in memory.
    public static func sha256<Bytes: Sequence>(of data: Bytes) -> Digest where Bytes.Element == UInt8 {
        var hasher = SHA256Hasher()
        let array = Array(data)
        array.withUnsafeBytes { hasher.update($0) }
        return hasher.finalize()
    }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A digest string that could not be parsed.
public struct DigestError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The text that was given.
    public let text: String
    /// Why it is not a digest.
    public let reason: String
    public var description: String { "invalid digest \"\(text)\": \(reason)" }
}
