import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The second stage: libarchive parsing tar (only tar: compression was undone upstream) from
/// the chunks in the pipe, without copying them. Each chunk passes a `TarValidator` first, and
/// each entry libarchive reads is compared with Go's reading of it: a layer Go's `archive/tar`
/// refuses, or reads differently, is refused.
final class TarReader {
    final class ReadContext {
        let pipe: ChunkPipe
        var current: ChunkPipe.Chunk?
        /// The producer's error, or the validator's: the reason libarchive was cut off.
        var upstreamError: LayerError?
        var bytesDelivered: Int64 = 0
        /// Go's archive/tar rules, applied to each chunk before libarchive sees it.
        var validator = TarValidator()
        var streamEnded = false
        /// Zeros for the padding a stream's last entry lacks (see `TarValidator.finish`).
        private(set) var zeros: UnsafeMutableRawPointer?
        init(pipe: ChunkPipe) { self.pipe = pipe }
        deinit { zeros?.deallocate() }

        func recycleCurrent() {
            if let current { pipe.recycle(current) }
            current = nil
        }

        /// The next bytes for libarchive: a chunk (checked first), the missing final padding, or
        /// nothing at the end.
        func nextBytes() throws(LayerError) -> UnsafeRawBufferPointer {
            recycleCurrent()
            if streamEnded { return UnsafeRawBufferPointer(start: nil, count: 0) }
            guard let chunk = try pipe.next() else {
                streamEnded = true
                let padding = try validator.finish()
                guard padding > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
                let zeros = self.zeros ?? UnsafeMutableRawPointer.allocate(byteCount: TarSyntax.blockSize, alignment: 16)
                zeros.initializeMemory(as: UInt8.self, repeating: 0, count: TarSyntax.blockSize)
                self.zeros = zeros
                return UnsafeRawBufferPointer(start: zeros, count: padding)
            }
            current = chunk
            bytesDelivered += Int64(chunk.count)
            let bytes = UnsafeRawBufferPointer(start: chunk.base, count: chunk.count)
            try validator.consume(bytes)
            return bytes
        }
    }

    let archive: OpaquePointer
    let context: ReadContext
    /// The blob had no bytes at all: an empty layer.
    private(set) var isEmpty = false
    private let contextRef: Unmanaged<ReadContext>

    init(pipe: ChunkPipe) throws(LayerError) {
        guard let a = archive_read_new() else { throw LayerError(.input, "libarchive: out of memory") }
        archive = a
        context = ReadContext(pipe: pipe)
        contextRef = Unmanaged.passRetained(context)
        archive_read_support_format_tar(a)
        // No bidding: libarchive's bid refuses some first headers Go reads (a NUL inside an octal
        // field, device fields of a v7 header); the validator decides what is a tar header.
        archive_read_set_format(a, ARCHIVE_FORMAT_TAR)
        let rc = archive_read_open(a, contextRef.toOpaque(), nil, { archive, client, buffer in
            let ctx = Unmanaged<ReadContext>.fromOpaque(client!).takeUnretainedValue()
            do throws(LayerError) {
                let bytes = try ctx.nextBytes()
                guard bytes.count > 0 else { return 0 }
                buffer!.pointee = bytes.baseAddress
                return bytes.count
            } catch {
                ctx.upstreamError = error
                lk_archive_set_error(archive, EIO, error.reason)
                return -1
            }
        }, nil)
        if rc != ARCHIVE_OK && context.bytesDelivered == 0 && context.upstreamError == nil {
            isEmpty = true  // a zero-byte blob is an empty layer
        } else if rc != ARCHIVE_OK {
            // deinit frees the archive and the context.
            throw context.upstreamError ?? LayerError(.corruptArchive, "tar: " + Self.errorString(a))
        }
    }

    deinit {
        archive_read_free(archive)
        context.recycleCurrent()
        contextRef.release()
    }

    /// Reads the next header into `entry`; false at the end of the archive.
    func next(_ entry: OpaquePointer) throws(LayerError) -> Bool {
        if isEmpty { return false }
        let rc = archive_read_next_header2(archive, entry)
        // Go's archive/tar must have read the same entry, or the same end, at the same place.
        if rc == ARCHIVE_EOF {
            try context.validator.checkEnd(at: archive_read_header_position(archive))
            return false
        }
        if rc == ARCHIVE_OK || rc == ARCHIVE_WARN {
            try context.validator.check(entry, at: archive_read_header_position(archive))
            return true
        }
        // A zero-byte blob is an empty layer.
        if context.bytesDelivered == 0 && context.upstreamError == nil { return false }
        throw context.upstreamError ?? LayerError(.corruptArchive, "tar: " + Self.errorString(archive))
    }

    /// Reads and recycles whatever follows the end-of-archive marker, so the producer reaches the
    /// end of the blob (trailing bytes count in the digests). Throws the producer's error.
    func drain() throws(LayerError) {
        context.recycleCurrent()
        if let error = context.upstreamError { throw error }
        while let chunk = try context.pipe.next() { context.pipe.recycle(chunk) }
    }

    static func errorString(_ archive: OpaquePointer) -> String {
        if let s = archive_error_string(archive) { return String(cString: s) }
        return "unknown libarchive error"
    }
}
