import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Buffers tar output into the pipe's chunks. The pipe hashes them (the diffID): the writing
/// thread when the compressing side is behind, the compressing side otherwise.
final class TarSink {
    let pipe: ChunkPipe
    private var chunk: UnsafeMutableRawPointer?
    private var fill = 0
    private(set) var total: Int64 = 0
    private(set) var closed = false

    init(pipe: ChunkPipe) {
        self.pipe = pipe
        pipe.enableSharedHash()
    }

    private func current() throws(LayerError) -> UnsafeMutableRawPointer {
        if let chunk { return chunk }
        guard let next = pipe.acquire() else { throw LayerError(.input, "the output side stopped") }
        chunk = next
        fill = 0
        return next
    }

    private func flushIfFull() throws(LayerError) {
        if fill == pipe.chunkSize { try flush() }
    }

    func flush() throws(LayerError) {
        guard let c = chunk, fill > 0 else { return }
        total += Int64(fill)
        chunk = nil
        guard pipe.push(c, count: fill) else { throw LayerError(.input, "the output side stopped") }
        fill = 0
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(LayerError) {
        var offset = 0
        while offset < bytes.count {
            let c = try current()
            let n = min(bytes.count - offset, pipe.chunkSize - fill)
            (c + fill).copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
            fill += n
            offset += n
            try flushIfFull()
        }
    }

    func write(_ bytes: [UInt8]) throws(LayerError) {
        try withBytes(bytes) { (b) throws(LayerError) in try write(b) }
    }

    func zeros(_ count: Int) throws(LayerError) {
        var left = count
        while left > 0 {
            let c = try current()
            let n = min(left, pipe.chunkSize - fill)
            (c + fill).initializeMemory(as: UInt8.self, repeating: 0, count: n)
            fill += n
            left -= n
            try flushIfFull()
        }
    }

    /// Copies `length` bytes of `fd` from `offset` straight into the chunks, then pads to 512.
    /// A file that shrank meanwhile is padded with zeros (and reported), so the archive stays valid.
    func copy(from fd: Int32, offset start: Int64, length: Int64, name: String) throws(LayerError) -> Bool {
        var done: Int64 = 0
        var complete = true
        while done < length {
            let c = try current()
            let want = Int(min(length - done, Int64(pipe.chunkSize - fill)))
            let n = pread(fd, c + fill, want, off_t(start + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw LayerError.system(Errno(rawValue: errno), entry: name, "cannot read")
            }
            if n == 0 {
                complete = false
                try zeros(Int(length - done))
                done = length
                break
            }
            fill += n
            done += Int64(n)
            try flushIfFull()
        }
        return complete
    }

    func pad(_ size: Int64) throws(LayerError) {
        let rest = Int((512 - size % 512) % 512)
        if rest > 0 { try zeros(rest) }
    }

    /// Two zero blocks end the archive; then everything is flushed.
    /// Writes the end-of-archive blocks and hands over the last chunk. The diffID is the pipe's
    /// shared digest once the consumer has taken every chunk.
    func finish() throws(LayerError) {
        try zeros(1024)
        try flush()
        closed = true
    }

    deinit {
        if let chunk { pipe.giveBack(chunk) }
    }
}
