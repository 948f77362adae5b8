import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The second stage: libarchive parsing tar (only tar: compression was undone upstream) from
/// the chunks in the pipe, without copying them.
final class TarReader {
    final class ReadContext {
        let pipe: ChunkPipe
        var current: ChunkPipe.Chunk?
        var upstreamError: LayerError?
        var bytesDelivered: Int64 = 0
        init(pipe: ChunkPipe) { self.pipe = pipe }

        func recycleCurrent() {
            if let current { pipe.recycle(current) }
            current = nil
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
        let rc = archive_read_open(a, contextRef.toOpaque(), nil, { archive, client, buffer in
            let ctx = Unmanaged<ReadContext>.fromOpaque(client!).takeUnretainedValue()
            ctx.recycleCurrent()
            do throws(LayerError) {
                guard let chunk = try ctx.pipe.next() else { return 0 }
                ctx.current = chunk
                ctx.bytesDelivered += Int64(chunk.count)
                buffer!.pointee = UnsafeRawPointer(chunk.base)
                return chunk.count
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
        if rc == ARCHIVE_EOF { return false }
        if rc == ARCHIVE_OK || rc == ARCHIVE_WARN { return true }
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
