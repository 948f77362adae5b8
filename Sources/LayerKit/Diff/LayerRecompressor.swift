import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Rewrites a layer blob with another compression (zstd → gzip for tools that read only gzip),
/// checking that the tar inside is unchanged: the diffID before and after is the same by
/// construction, and is returned with the new blob's descriptor.
public enum LayerRecompressor {
    /// Decodes the blob `source` (gzip, zstd or tar, detected from its bytes) and writes it to the
    /// open file `outputFD` with `compression`, both digests computed in the same pass.
    ///
    /// - Parameters:
    ///   - source: the blob to rewrite.
    ///   - outputFD: an open file to write the new blob to.
    ///   - compression: the new compression.
    ///   - level: its level (nil: the default).
    ///   - expectedDiffID: when given, a tar that hashes otherwise is an error.
    public static func recompress(_ source: LayerSource, to outputFD: Int32, compression: Compression,
                                  level: Int? = nil, expectedDiffID: Digest? = nil) throws(LayerError) -> DiffResult {
        let options = DiffOptions(compression: compression, level: level)
        let sink = BlobSink(fd: outputFD)
        var tarSize: Int64 = 0
        do throws(LayerError) {
            let compressor = try options.makeCompressor()
            let summary = try LayerPipeline.readTar(source) { (bytes) throws(LayerError) in
                tarSize += Int64(bytes.count)
                try compressor.feed(bytes, into: sink)
            }
            try compressor.finish(into: sink)
            if let expectedDiffID, summary.diffID != expectedDiffID {
                throw LayerError(.digestMismatch, "diffID mismatch: the uncompressed layer does not match \(expectedDiffID)")
            }
            let blobDigest = compression == .none ? summary.diffID : sink.hasher.finalize()
            return DiffResult(descriptor: Descriptor(mediaType: options.mediaType, digest: blobDigest, size: sink.size),
                              diffID: summary.diffID, tarSize: tarSize, entryCount: 0, warnings: [])
        } catch {
            throw error.inLayer(source.displayName)
        }
    }
}
