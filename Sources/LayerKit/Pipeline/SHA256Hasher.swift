import Crypto

/// Streaming SHA-256: feed bytes as they pass, read the digest at the end.
public struct SHA256Hasher {
    private var state = SHA256()
    public init() {}

    /// Adds bytes to the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        state.update(bufferPointer: bytes)
    }

    /// The digest of everything added so far.
    public func finalize() -> Digest {
        Digest(sha256: Array(state.finalize()))
    }
}
