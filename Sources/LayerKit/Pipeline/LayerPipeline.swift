import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The reading half of an unpack: a `BlobDecoder` thread reads the blob in large chunks, hashes
/// it, detects and undoes its compression and hashes the tar (the diffID); `consume` parses the
/// tar on the calling thread from the chunks it hands over.
enum LayerPipeline {
    /// Runs the pipeline: the decoder thread feeding `consume`, which runs on the calling thread.
    static func read(_ source: LayerSource, expectedBlobDigest: Digest? = nil, gzip: GzipDecoderKind = .isal,
                     _ consume: (TarReader, OpaquePointer) throws(LayerError) -> Void) throws(LayerError) -> LayerSummary {
        let fd: Int32
        var ownsFD = false
        switch source {
        case .path(let path):
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw LayerError(.input, "cannot open: \(Errno(rawValue: errno).description)")
            }
            ownsFD = true
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        case .fileDescriptor(let given):
            fd = given
        }
        defer { if ownsFD { close(fd) } }

        let pipe = ChunkPipe()
        let producer = BlobDecoder(fd: fd, pipe: pipe, gzip: gzip, expectedBlobDigest: expectedBlobDigest)
        producer.start()

        // libarchive converts names to the thread's locale; UTF-8 keeps them byte-exact.
        let utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil)
        let previous = utf8.map { uselocale($0) }
        defer {
            if let previous { uselocale(previous) }
            if let utf8 { freelocale(utf8) }
        }

        var failure: LayerError?
        do throws(LayerError) {
            let stream = try TarReader(pipe: pipe)
            guard let entry = archive_entry_new() else { throw LayerError(.input, "libarchive: out of memory") }
            defer { archive_entry_free(entry) }
            try consume(stream, entry)
            try stream.drain()
        } catch {
            failure = error
        }
        if let failure {
            if expectedBlobDigest != nil, failure.kind == .corruptArchive || failure.kind == .pathEscapes || failure.kind == .invalidEntry {
                // Read on to the end: a blob that is not the expected one is reported as such.
                while let chunk = try? pipe.next() { pipe.recycle(chunk) }
            } else {
                pipe.close()
            }
        }
        producer.wait()
        // The producer's error (truncated or corrupt compressed data) explains a tar error it caused.
        if let upstream = producer.error { throw upstream }
        if let failure {
            if let want = expectedBlobDigest, let got = producer.blobDigest, got != want {
                throw LayerError(.digestMismatch, "digest mismatch: expected \(want), got \(got) (and the content is bad: \(failure.description))")
            }
            throw failure
        }
        guard let blobDigest = producer.blobDigest, let diffID = producer.diffID ?? pipe.sharedDigest() else {
            throw LayerError(.input, "the layer was not read to its end")
        }
        return LayerSummary(blobDigest: blobDigest, diffID: diffID, compression: producer.compression,
                            blobSize: producer.blobSize, tarSize: producer.tarSize, entryCount: 0, warnings: [])
    }
}
