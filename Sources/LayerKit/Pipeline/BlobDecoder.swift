import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The first stage of the pipeline, on its own thread: reads the blob in large chunks, detects
/// and undoes the compression, and hands the tar bytes to the consumer through a `ChunkPipe`.
/// It always reads to the end of the blob, so bytes after the tar end-of-archive marker are part
/// of both digests.
///
/// Hashing is left to the pipe: the blob's own chunks (a compressed blob) and the tar's chunks are
/// hashed in order by whichever thread has time, so that on a large layer this thread does little
/// but inflate — the critical path — and the other core takes the two SHA-256s and the writes.
final class BlobDecoder: @unchecked Sendable {
    let input: BlobInput
    let pipe: ChunkPipe
    let gzip: GzipDecoderKind
    private let finished = DispatchSemaphore(value: 0)

    // Results, valid once `wait()` returns.
    private(set) var compression: Compression = .none
    private(set) var blobSize: Int64 = 0
    private(set) var tarSize: Int64 = 0
    private(set) var error: LayerError?

    /// When set, a blob that fails to decode is read to its end anyway: if it does not hash to
    /// this, the error reported is the digest mismatch (it was damaged or swapped), not the decoder's.
    let expectedBlobDigest: Digest?
    /// When set, the blob must be exactly this long: no byte beyond it is read, and a shorter
    /// blob fails at its end.
    let expectedSize: Int64?
    /// Where every byte of the blob is also written, from the bytes hashed (the store's copy of
    /// the blob: the bytes kept are the bytes verified).
    let copyFD: Int32?
    /// Checked before each read: a cancelled unpack stops within a chunk.
    let cancellation: CancellationFlag?

    init(input: BlobInput, pipe: ChunkPipe, gzip: GzipDecoderKind = .isal, expectedBlobDigest: Digest? = nil,
         expectedSize: Int64? = nil, copyFD: Int32? = nil, cancellation: CancellationFlag? = nil) {
        self.input = input
        self.pipe = pipe
        self.gzip = gzip
        self.expectedBlobDigest = expectedBlobDigest
        self.expectedSize = expectedSize
        self.copyFD = copyFD
        self.cancellation = cancellation
    }

    func start() {
        let thread = Thread { [self] in
            self.run()
            self.finished.signal()
        }
        thread.name = "layerkit-decompress"
        thread.stackSize = 1 << 20
        thread.start()
    }

    func wait() { finished.wait() }

    /// The stream whose digest is the blob digest: the blob's own chunks when compressed, the tar
    /// itself when not.
    var blobStream: ChunkPipe.Kind { compression == .none ? .data : .blob }

    /// The blob digest, once the consumer has taken every chunk.
    func blobDigest() throws(LayerError) -> Digest? { try pipe.sharedDigest(blobStream) }

    /// The diffID, once the consumer has taken every chunk.
    func diffID() throws(LayerError) -> Digest? { try pipe.sharedDigest(.data) }

    private func run() {
        do {
            try produce()
            pipe.finish(nil)
        } catch {
            var reported = error
            if error.kind == .corruptArchive, let expected = expectedBlobDigest, let actual = try? hashRest(), actual != expected {
                reported = LayerError(.digestMismatch, "digest mismatch: the blob does not match \(expected) (and the data does not decode: \(error.reason))")
            }
            self.error = reported
            pipe.finish(reported)
        }
    }

    /// Hashes what is left of the blob after a decoding failure (the consumer may have stopped:
    /// what it has not hashed yet is hashed here).
    private func hashRest() throws(LayerError) -> Digest? {
        pipe.hashQueuedChunks(blobStream)
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let n = try readBlob(buffer, size)
            if n == 0 { break }
            pipe.hashMore(blobStream, UnsafeRawBufferPointer(start: buffer, count: n))
        }
        return try blobDigest()
    }

    /// Reads up to `count` bytes of the blob, retrying short reads until its end (or the expected
    /// size), and counts them. Returns the number read; 0 at the end.
    private func readBlob(_ buffer: UnsafeMutableRawPointer, _ count: Int) throws(LayerError) -> Int {
        if cancellation?.isCancelled == true { throw LayerError(.cancelled, "cancelled") }
        var want = count
        if let expectedSize { want = Int(min(Int64(count), expectedSize - blobSize)) }
        var total = 0
        while total < want {
            let n = try input.read(into: buffer + total, count: want - total, cancellation: cancellation)
            if n == 0 { break }
            total += n
        }
        if let expectedSize, total < want {
            throw LayerError(.digestMismatch, "size mismatch: the blob ends after \(blobSize + Int64(total)) bytes, its descriptor says \(expectedSize)")
        }
        if let expectedSize, total == 0, count > 0 {
            // At the expected size: the blob must end here.
            var extra: UInt8 = 0
            if try input.read(into: &extra, count: 1, cancellation: cancellation) > 0 { throw LayerError(.digestMismatch, "size mismatch: the blob is larger than its descriptor's \(expectedSize) bytes") }
        }
        blobSize += Int64(total)
        return total
    }

    private func produce() throws(LayerError) {
        guard let first = pipe.acquire() else { return }
        let firstCount = try readBlob(first, pipe.chunkSize)
        guard let detected = Compression.detect(UnsafeRawBufferPointer(start: first, count: min(firstCount, Compression.magicLength))) else {
            pipe.giveBack(first)
            // Hashed here, so a digest mismatch can still be told from garbage.
            pipe.enableSharedHash(.data)
            pipe.hashMore(.data, UnsafeRawBufferPointer(start: first, count: firstCount))
            throw LayerError(.corruptArchive, "not a layer: the data is neither gzip, zstd nor tar")
        }
        compression = detected

        if detected == .none {
            // Uncompressed: the blob is the tar; one hash serves as both digests.
            pipe.enableSharedHash(.data, copyingTo: copyFD)
            var chunk = first
            var count = firstCount
            while count > 0 {
                tarSize += Int64(count)
                guard pipe.push(chunk, count: count) else { return }
                guard let next = pipe.acquire() else { return }
                chunk = next
                count = try readBlob(chunk, pipe.chunkSize)
            }
            pipe.giveBack(chunk)
            return
        }

        var decoder: any StreamDecoder
        switch detected {
        case .gzip: decoder = gzip == .isal ? IsalGzipDecoder() as any StreamDecoder : ZlibGzipDecoder()
        case .zstd: decoder = ZstdDecoder()
        case .none: fatalError("unreachable")
        }
        defer { decoder.release() }

        pipe.enableSharedHash(.data)
        pipe.enableSharedHash(.blob, copyingTo: copyFD)
        // Each input chunk is a pipe buffer: once inflated it goes on as a blob chunk, to be
        // hashed (and copied) by whichever side has time.
        var input = first
        var inputCount = firstCount
        var holdingInput = true
        defer { if holdingInput { pipe.giveBack(input) } }

        guard var out = pipe.acquire() else { return }
        var holdingOut = true
        defer { if holdingOut { pipe.giveBack(out) } }
        var outFill = 0
        let outCapacity = pipe.chunkSize
        /// Passes a full output chunk on and takes a fresh one; false once the consumer has stopped.
        func handOver() -> Bool {
            tarSize += Int64(outFill)
            holdingOut = false
            guard pipe.push(out, count: outFill), let next = pipe.acquire() else { return false }
            out = next
            holdingOut = true
            outFill = 0
            return true
        }
        while inputCount > 0 {
            var offset = 0
            while offset < inputCount {
                let (consumed, produced) = try decoder.step(
                    UnsafeRawBufferPointer(start: input + offset, count: inputCount - offset),
                    UnsafeMutableRawBufferPointer(start: out + outFill, count: outCapacity - outFill))
                offset += consumed
                outFill += produced
                if outFill == outCapacity {
                    guard handOver() else { return }
                } else if consumed == 0 && produced == 0 {
                    break
                }
            }
            holdingInput = false
            guard pipe.push(input, count: inputCount, kind: .blob), let nextInput = pipe.acquire() else { return }
            input = nextInput
            holdingInput = true
            inputCount = try readBlob(input, pipe.chunkSize)
        }
        pipe.giveBack(input)
        holdingInput = false
        // Flush what the decoder still holds (zstd may keep output back until asked again).
        // No input: an empty buffer, but with a valid address (some decoders check it).
        let noInput = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        defer { noInput.deallocate() }
        while true {
            let (_, produced) = try decoder.step(
                UnsafeRawBufferPointer(start: noInput, count: 0),
                UnsafeMutableRawBufferPointer(start: out + outFill, count: outCapacity - outFill))
            outFill += produced
            if outFill == outCapacity {
                guard handOver() else { return }
            } else if produced == 0 {
                break
            }
        }
        guard decoder.isComplete else {
            throw LayerError(.corruptArchive, "\(detected.rawValue): unexpected end of data (the blob is truncated)")
        }
        holdingOut = false
        if outFill > 0 {
            tarSize += Int64(outFill)
            pipe.push(out, count: outFill)
        } else {
            pipe.giveBack(out)
        }
    }
}
