import CIsal

/// gzip via Intel's ISA-L inflate (Debian `libisal-dev`): about 4x faster than zlib here.
/// Concatenated members are decoded one after the other, as gzip(1) does; the CRC-32 and size
/// of each member are checked by ISA-L.
struct IsalGzipDecoder: StreamDecoder {
    private let state: UnsafeMutablePointer<inflate_state>
    private var inMember = false
    private var members = 0

    init() {
        state = .allocate(capacity: 1)
        isal_inflate_init(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP)
    }

    var isComplete: Bool { !inMember && members > 0 }

    mutating func step(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws(LayerError) -> (consumed: Int, produced: Int) {
        if !inMember {
            guard !input.isEmpty else { return (0, 0) }
            if members > 0 {
                isal_inflate_reset(state)
                state.pointee.crc_flag = UInt32(ISAL_GZIP)
            }
            inMember = true
        }
        state.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        state.pointee.avail_in = UInt32(input.count)
        state.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        state.pointee.avail_out = UInt32(output.count)
        let rc = isal_inflate(state)
        let consumed = input.count - Int(state.pointee.avail_in)
        let produced = output.count - Int(state.pointee.avail_out)
        if rc < 0 {
            throw LayerError(.corruptArchive, Self.describe(rc, members: members))
        }
        if state.pointee.block_state == ISAL_BLOCK_FINISH {
            inMember = false
            members += 1
        }
        return (consumed, produced)
    }

    static func describe(_ rc: Int32, members: Int) -> String {
        let what: String
        switch rc {
        case ISAL_INVALID_WRAPPER, ISAL_UNSUPPORTED_METHOD:
            what = members > 0 ? "data after the end of the gzip stream is not gzip" : "invalid gzip header"
        case ISAL_INCORRECT_CHECKSUM: what = "gzip checksum mismatch (corrupt data)"
        default: what = "corrupt deflate data (isa-l error \(rc))"
        }
        return "gzip: \(what)"
    }

    mutating func release() { state.deallocate() }
}
