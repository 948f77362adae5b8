import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Rewrites a layer blob with another compression (zstd → gzip for tools that read only gzip),
/// checking that the tar inside is unchanged: the diffID before and after is the same by
/// construction, and is returned with the new blob's descriptor.
public enum LayerRecompressor {
    /// Decodes the blob at `source` (gzip, zstd or tar, detected from its bytes) and writes it to
    /// `destination` with `compression`, both digests computed in the same pass.
    ///
    /// - Parameter expectedDiffID: when given, a tar that hashes otherwise is an error and no
    ///   output is left.
    public static func recompress(_ source: String, to destination: String, compression: Compression,
                                  level: Int? = nil, expectedDiffID: Digest? = nil) throws(LayerError) -> DiffResult {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw LayerError(.input, layer: source, "cannot open: \(Errno(rawValue: errno).description)") }
        defer { close(input) }
        let output = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw LayerError(.input, layer: destination, "cannot create: \(Errno(rawValue: errno).description)") }
        var done = false
        defer {
            close(output)
            if !done { unlink(destination) }
        }
        let pipe = ChunkPipe(chunkSize: 1 << 20, capacity: 8)
        let producer = BlobDecoder(fd: input, pipe: pipe)
        producer.start()
        let sink = BlobSink(fd: output)
        let options = DiffOptions(compression: compression, level: level)
        do throws(LayerError) {
            let compressor = try options.makeCompressor()
            var tarSize: Int64 = 0
            while let chunk = try pipe.next() {
                tarSize += Int64(chunk.count)
                try compressor.feed(UnsafeRawBufferPointer(start: chunk.base, count: chunk.count), into: sink)
                pipe.recycle(chunk)
            }
            try compressor.finish(into: sink)
            producer.wait()
            if let error = producer.error { throw error }
            guard let diffID = producer.compression == .none ? producer.diffID : pipe.sharedDigest() else {
                throw LayerError(.corruptArchive, "no data")
            }
            if let expectedDiffID, diffID != expectedDiffID {
                throw LayerError(.digestMismatch, "diffID mismatch: expected \(expectedDiffID), got \(diffID)")
            }
            let blobDigest = compression == .none ? diffID : sink.hasher.finalize()
            done = true
            return DiffResult(descriptor: Descriptor(mediaType: options.mediaType, digest: blobDigest, size: sink.size),
                              diffID: diffID, tarSize: tarSize, entryCount: 0, warnings: [])
        } catch {
            pipe.close()
            producer.wait()
            throw error.inLayer(source)
        }
    }
}
