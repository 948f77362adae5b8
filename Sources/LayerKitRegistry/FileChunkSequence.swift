import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A slice of a file as a sequence of 1 MiB buffers, for upload bodies: read as the request is
/// sent, so a blob of any size streams from its file with flat memory. Each iteration opens the
/// file anew, so a retried request sends the same bytes again.
struct FileChunkSequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String
    let offset: Int64
    let length: Int64
    static let chunkSize = 1 << 20

    struct FileReadError: Error, CustomStringConvertible {
        var description: String
    }

    final class AsyncIterator: AsyncIteratorProtocol {
        let path: String
        var position: Int64
        let end: Int64
        var fd: Int32 = -1

        init(path: String, offset: Int64, length: Int64) {
            self.path = path
            self.position = offset
            self.end = offset + length
        }

        deinit { if fd >= 0 { close(fd) } }

        func next() async throws -> ByteBuffer? {
            guard position < end else { return nil }
            if fd < 0 {
                fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw FileReadError(description: "\(path): \(String(cString: strerror(errno)))") }
            }
            let want = Int(Swift.min(Int64(FileChunkSequence.chunkSize), end - position))
            var buffer = ByteBufferAllocator().buffer(capacity: want)
            let fd = self.fd, position = self.position
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { raw -> Int in
                var done = 0
                while done < want {
                    let n = pread(fd, raw.baseAddress! + done, want - done, off_t(position) + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    done += n
                }
                return done
            }
            guard count == want else { throw FileReadError(description: "\(path): the file is shorter than the blob it should hold") }
            self.position += Int64(count)
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(path: path, offset: offset, length: length) }
}
