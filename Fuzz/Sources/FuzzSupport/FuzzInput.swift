/// Reads an input as a stream of small decisions (the interpreters of the upper-diff and
/// store-open targets); past the end every read gives zeros, so any input is a program.
public struct FuzzInput {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var isAtEnd: Bool { offset >= bytes.count }
    public var remaining: Int { max(0, bytes.count - offset) }

    public mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// A number in `0..<bound`.
    public mutating func below(_ bound: Int) -> Int { bound <= 1 ? 0 : Int(byte()) % bound }

    public mutating func uint16() -> Int { Int(byte()) | Int(byte()) << 8 }

    public mutating func uint32() -> UInt32 { UInt32(uint16()) | UInt32(uint16()) << 16 }

    /// Up to `limit` bytes, the count given by the next byte.
    public mutating func bytes(upTo limit: Int) -> [UInt8] {
        let count = min(Int(byte()), limit, remaining)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// Everything left.
    public mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return offset < bytes.count ? Array(bytes[offset...]) : []
    }
}

/// A deterministic hash of an input, to pick a mode per input without spending its bytes.
public func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash: UInt64 = 0xcbf29ce484222325
    for b in bytes {
        hash ^= UInt64(b)
        hash = hash &* 0x100000001b3
    }
    return hash
}
