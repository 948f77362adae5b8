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
    /// Where the two threads of the pipeline waited for each other (not part of equality).
    public var stageWaits: StageWaits? = nil
    /// Bytes the applied layer takes on disk (allocated blocks, each inode once), counted while
    /// it was written into a dir that started empty; nil when not applied or not countable (not
    /// part of equality).
    public var allocatedBytes: Int64? = nil

    public static func == (a: LayerSummary, b: LayerSummary) -> Bool {
        a.blobDigest == b.blobDigest && a.diffID == b.diffID && a.compression == b.compression && a.blobSize == b.blobSize
            && a.tarSize == b.tarSize && a.entryCount == b.entryCount && a.warnings == b.warnings
    }
}

/// How long each stage of an unpack's pipeline waited for the other, in seconds: the decoding
/// thread for a free buffer (the applying side was behind), the applying thread for data (the
/// decoding side was behind). The stage that waited less is the critical path.
public struct StageWaits: Sendable, Codable, Equatable {
    /// The decoding thread (read, inflate), waiting for the applying side.
    public var decoding: Double
    /// The applying thread (tar parsing, files), waiting for the decoding side.
    public var applying: Double
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
