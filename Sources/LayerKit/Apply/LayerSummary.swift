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

/// What a layer is expected to be; a mismatch fails the apply.
public struct LayerExpectation: Sendable, Equatable {
    /// The blob's digest.
    public var blobDigest: Digest?
    /// The digest of the uncompressed tar.
    public var diffID: Digest?
    /// The blob's size: no byte beyond it is read, and a shorter blob fails.
    public var blobSize: Int64?

    public init(blobDigest: Digest? = nil, diffID: Digest? = nil, blobSize: Int64? = nil) {
        self.blobDigest = blobDigest
        self.diffID = diffID
        self.blobSize = blobSize
    }

    /// What the blob of `descriptor` must be.
    public init(_ descriptor: Descriptor, diffID: Digest? = nil) {
        self.init(blobDigest: descriptor.digest, diffID: diffID, blobSize: descriptor.size)
    }
}
