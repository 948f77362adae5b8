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
    /// What a read is given besides its source.
    struct Settings {
        var expecting = LayerExpectation()
        var gzip: GzipDecoderKind = .isal
        /// Where the blob's bytes are also written as they are read.
        var copyFD: Int32? = nil
        var cancellation: CancellationFlag? = nil
    }

    /// Opens a source: its descriptor or stream, and the size it must have.
    private static func open(_ source: LayerSource) throws(LayerError) -> BlobInput {
        switch source {
        case .path(let path):
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw LayerError(.input, "cannot open: \(Errno(rawValue: errno).description)")
            }
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
            return BlobInput(fd: fd, ownsDescriptor: true, size: nil)
        case .fileDescriptor(let given):
            return BlobInput(fd: given, ownsDescriptor: false, size: nil)
        case .layoutBlob(let layout, let descriptor):
            do throws(ImageError) {
                let fd = try layout.openBlob(descriptor)
                _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
                return BlobInput(fd: fd, ownsDescriptor: true, size: descriptor.size)
            } catch {
                throw LayerError(error.kind == .blobMismatch ? .digestMismatch : .input, error.reason)
            }
        case .stream(let stream):
            return BlobInput(stream: stream)
        }
    }

    /// Reads a blob as it is stored, without decoding it, handing it over in chunks: up to `limit`
    /// bytes, and one more to find a blob that is longer (the caller checks the size it got).
    static func copyBlob(_ source: LayerSource, limit: Int64,
                         _ body: (UnsafeRawBufferPointer) throws(LayerError) -> Void) throws(LayerError) {
        let input = try open(source)
        defer { input.close() }
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        var total: Int64 = 0
        while total <= limit {
            let n = try input.read(into: buffer, count: Int(min(Int64(size), limit + 1 - total)), cancellation: nil)
            if n == 0 { return }
            total += Int64(n)
            try body(UnsafeRawBufferPointer(start: buffer, count: n))
        }
    }

    /// Decodes a blob and hands its tar bytes over in chunks, without parsing them (a layer being
    /// recompressed). Returns the digests and sizes.
    static func readTar(_ source: LayerSource, _ body: (UnsafeRawBufferPointer) throws(LayerError) -> Void) throws(LayerError) -> LayerSummary {
        let input = try open(source)
        defer { input.close() }
        let pipe = ChunkPipe()
        let producer = BlobDecoder(input: input, pipe: pipe, expectedSize: input.size)
        producer.start()
        var failure: LayerError?
        do throws(LayerError) {
            while let chunk = try pipe.next() {
                defer { pipe.recycle(chunk) }
                try body(UnsafeRawBufferPointer(start: chunk.base, count: chunk.count))
            }
        } catch {
            failure = error
            pipe.close()
        }
        producer.wait()
        if let error = producer.error { throw error }
        if let failure { throw failure }
        guard let blobDigest = try producer.blobDigest(), let diffID = try producer.diffID() else {
            throw LayerError(.corruptArchive, "no data")
        }
        return LayerSummary(blobDigest: blobDigest, diffID: diffID, compression: producer.compression,
                            blobSize: producer.blobSize, tarSize: producer.tarSize, entryCount: 0, warnings: [])
    }

    /// Runs the pipeline: the decoder thread feeding `consume`, which runs on the calling thread.
    static func read(_ source: LayerSource, _ settings: Settings,
                     _ consume: (TarReader, OpaquePointer) throws(LayerError) -> Void) throws(LayerError) -> LayerSummary {
        try settings.cancellation?.check()
        let input = try open(source)
        defer { input.close() }
        let expectedBlobDigest = settings.expecting.blobDigest

        let pipe = ChunkPipe()
        let producer = BlobDecoder(input: input, pipe: pipe, gzip: settings.gzip, expectedBlobDigest: expectedBlobDigest,
                                   expectedSize: settings.expecting.blobSize ?? input.size, copyFD: settings.copyFD,
                                   cancellation: settings.cancellation)
        producer.start()

        // libarchive converts names to the thread's locale; UTF-8 keeps them byte-exact.
        let utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil)
        let previous = utf8.map { uselocale($0) }
        defer {
            if let previous { uselocale(previous) }
            if let utf8 { freelocale(utf8) }
        }

        var failure: LayerError?
        var reader: TarReader?
        do throws(LayerError) {
            let stream = try TarReader(pipe: pipe)
            reader = stream
            guard let entry = archive_entry_new() else { throw LayerError(.input, "libarchive: out of memory") }
            defer { archive_entry_free(entry) }
            try consume(stream, entry)
            try stream.drain()
        } catch {
            // What cut libarchive off (the tar validator) explains the error libarchive gave.
            failure = reader?.context.upstreamError ?? error
        }
        reader = nil
        if let failure {
            let contentError = failure.kind == .corruptArchive || failure.kind == .pathEscapes || failure.kind == .invalidEntry
            if contentError && (expectedBlobDigest != nil || input.isBounded) {
                // Read on to the end: a blob that is not the expected one is reported as such, and
                // the decoder's own verdict (a gzip checksum at the end of garbage the tar reader
                // choked on) is always reached, so the error does not depend on thread timing. A
                // blob with no known end (a pipe) is cut off instead.
                while let chunk = try? pipe.next() { pipe.recycle(chunk) }
            } else {
                pipe.close()
            }
        }
        producer.wait()
        // The producer's error (truncated or corrupt compressed data) explains a tar error it caused.
        if let upstream = producer.error { throw upstream }
        if let failure {
            if let want = expectedBlobDigest, let got = try? producer.blobDigest(), got != want {
                throw LayerError(.digestMismatch, "digest mismatch: the blob does not match \(want) (and the content is bad: \(failure.description))")
            }
            throw failure
        }
        guard let blobDigest = try producer.blobDigest(), let diffID = try producer.diffID() else {
            throw LayerError(.input, "the layer was not read to its end")
        }
        var summary = LayerSummary(blobDigest: blobDigest, diffID: diffID, compression: producer.compression,
                                   blobSize: producer.blobSize, tarSize: producer.tarSize, entryCount: 0, warnings: [])
        summary.stageWaits = StageWaits(decoding: pipe.waits.producer, applying: pipe.waits.consumer)
        return summary
    }
}
