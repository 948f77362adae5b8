import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A blob opened for reading: a file descriptor, or a `LayerStream` a writer fills as it goes.
/// The pipeline's stages read through this, never through the descriptor directly.
struct BlobInput {
    /// The descriptor to read (-1 for a stream).
    let fd: Int32
    /// Whether the descriptor is ours to close.
    let ownsDescriptor: Bool
    /// The size the blob must have, when the source says (a layout blob's descriptor, a stream).
    let size: Int64?
    /// The stream, for `LayerSource.stream`.
    let stream: LayerStream?

    init(fd: Int32, ownsDescriptor: Bool, size: Int64?) {
        self.fd = fd
        self.ownsDescriptor = ownsDescriptor
        self.size = size
        self.stream = nil
    }

    init(stream: LayerStream) {
        self.fd = -1
        self.ownsDescriptor = false
        self.size = stream.size
        self.stream = stream
        stream.beginReading()
    }

    /// Whether the blob has an end known in advance: a size from its source, or a regular file.
    /// (A pipe may never end.)
    var isBounded: Bool {
        if size != nil { return true }
        guard fd >= 0, let st = FileSystem.attributes(of: fd) else { return false }
        return FileSystem.isRegularFile(st)
    }

    /// Reads up to `count` bytes (fewer is not the end); 0 at the end of the blob.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, cancellation: CancellationFlag?) throws(LayerError) -> Int {
        if let stream { return try stream.read(into: buffer, count: count, cancellation: cancellation) }
        while true {
            let n = Glibc.read(fd, buffer, count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw LayerError(.input, "read error: \(Errno(rawValue: errno).description)")
        }
    }

    /// Done with the blob: the descriptor closed if ours, the stream's writer told if it was
    /// not read to its end.
    func close() {
        if ownsDescriptor { _ = Glibc.close(fd) }
        stream?.endReading()
    }
}
