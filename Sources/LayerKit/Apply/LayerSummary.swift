/// What was learned about a layer while reading it.
public struct LayerSummary: Sendable, Codable, Equatable {
    /// sha256 of the blob as stored (compressed).
    public var blobDigest: Digest
    /// sha256 of the uncompressed tar.
    public var diffID: Digest
    /// The compression found in the blob's first bytes.
    public var compression: Compression
    /// Bytes of the blob as stored.
    public var blobSize: Int64
    /// Bytes of the uncompressed tar, including anything after its end-of-archive marker.
    public var tarSize: Int64
    /// Tar entries (whiteouts included).
    public var entryCount: Int
    /// Things skipped without failing: xattrs the file system refused, sockets, ...
    public var warnings: [String]
}

/// Digests a layer is expected to have; a mismatch fails the apply.
public struct LayerExpectation: Sendable, Equatable {
    public var blobDigest: Digest?
    public var diffID: Digest?
    public init(blobDigest: Digest? = nil, diffID: Digest? = nil) {
        self.blobDigest = blobDigest
        self.diffID = diffID
    }
}
