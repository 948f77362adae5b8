import CZlib

/// gzip via zlib: the reference decoder, kept for comparison.
struct ZlibGzipDecoder: StreamDecoder {
    private let stream: UnsafeMutablePointer<z_stream>
    private var inMember = false
    private var members = 0

    init() {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        inflateInit2_(stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    }

    var isComplete: Bool { !inMember && members > 0 }

    mutating func step(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws(LayerError) -> (consumed: Int, produced: Int) {
        if !inMember {
            guard !input.isEmpty else { return (0, 0) }
            if members > 0 { inflateReset(stream) }
            inMember = true
        }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.pointee.avail_in = UInt32(input.count)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_out = UInt32(output.count)
        let rc = inflate(stream, Z_NO_FLUSH)
        let consumed = input.count - Int(stream.pointee.avail_in)
        let produced = output.count - Int(stream.pointee.avail_out)
        switch rc {
        case Z_OK, Z_BUF_ERROR: break
        case Z_STREAM_END:
            inMember = false
            members += 1
        default:
            let message = stream.pointee.msg.map { String(cString: $0) } ?? "error \(rc)"
            throw LayerError(.corruptArchive, members > 0 ? "gzip: data after the end of the gzip stream is not gzip (\(message))" : "gzip: \(message)")
        }
        return (consumed, produced)
    }

    mutating func release() {
        inflateEnd(stream)
        stream.deallocate()
    }
}
