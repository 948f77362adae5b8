/// A written layer: its OCI descriptor (media type, blob digest, size) and its diffID.
public struct DiffResult: Sendable, Codable, Equatable {
    public var descriptor: Descriptor
    public var diffID: Digest
    /// Bytes of the uncompressed tar.
    public var tarSize: Int64
    /// Tar entries written (whiteouts included).
    public var entryCount: Int
    public var warnings: [String]
}
