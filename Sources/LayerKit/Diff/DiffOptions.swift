import Logging
#if canImport(Glibc)
import Glibc
#endif

/// How a layer is written.
public struct DiffOptions: Sendable {
    public var compression: Compression
    /// gzip: 1...9 (mapped onto ISA-L's levels: 1 → 1, 2–6 → 2, 7–9 → 3); zstd: 1...19.
    /// nil: gzip 6, zstd 3.
    public var level: Int?
    /// Clamp every mtime to this (seconds since the epoch), for reproducible builds.
    public var sourceDateEpoch: Int64?
    /// Compare the contents of files whose size and mtime are equal, even when the mtime has a
    /// sub-second part (without this, only whole-second mtimes, as tar-extracted files have, are compared).
    public var compareContents: Bool
    /// Which xattrs a layer carries (the same policy as applying).
    public var xattrPolicy: XattrPolicy
    /// Compression threads: parallel deflate workers for gzip, libzstd workers for zstd (both cores
    /// by default).
    public var threads: Int
    /// `fsync` the output file before renaming it into place (a store that records the layer
    /// needs it; a command writing a file, like tar or zstd, does not by default).
    public var syncOutput: Bool = false
    /// Stream entries to the writer during the walk where every entry is a change (an upper dir,
    /// or a first layer with an empty OLD): compression starts with the first entry. The output is
    /// the same byte for byte either way; off only to compare the two paths.
    public var streamFullLayers: Bool = true
    /// Where warnings go (sockets skipped, files that shrank while read); they are also returned
    /// in the `DiffResult`. Discards by default.
    public var logger: Logger = .discarding

    public init(compression: Compression = .gzip, level: Int? = nil, sourceDateEpoch: Int64? = nil,
                compareContents: Bool = false, xattrPolicy: XattrPolicy = XattrPolicy(), threads: Int = 2) {
        self.compression = compression
        self.level = level
        self.sourceDateEpoch = sourceDateEpoch
        self.compareContents = compareContents
        self.xattrPolicy = xattrPolicy
        self.threads = threads
    }

    /// The OCI media type of the layer.
    public var mediaType: String { "application/vnd.oci.image.layer.v1.tar" + compression.mediaTypeSuffix }
}

extension DiffOptions {
    func makeCompressor() throws(LayerError) -> any BlobCompressor {
        switch compression {
        case .none: return PassthroughCompressor()
        case .gzip:
            let level = level ?? 6
            let isal = level <= 0 ? 0 : level == 1 ? 1 : level <= 6 ? 2 : 3
            return ParallelGzipCompressor(level: isal, workers: max(1, threads))
        case .zstd:
            return try ZstdCompressor(level: Int32(level ?? 3), workers: Int32(max(1, threads)))
        }
    }
}
