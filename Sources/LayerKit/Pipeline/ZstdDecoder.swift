import CZstd

/// zstd via libzstd's streaming API: concatenated and skippable frames are handled by the library.
struct ZstdDecoder: StreamDecoder {
    private let context: OpaquePointer
    private var midFrame = false
    private var sawInput = false

    init() { context = ZSTD_createDCtx() }

    var isComplete: Bool { sawInput && !midFrame }

    mutating func step(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws(LayerError) -> (consumed: Int, produced: Int) {
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let rc = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
        if ZSTD_isError(rc) != 0 {
            throw LayerError(.corruptArchive, "zstd: \(String(cString: ZSTD_getErrorName(rc)))")
        }
        // A call that moved nothing says nothing about frame boundaries.
        if inBuffer.pos > 0 || outBuffer.pos > 0 {
            if inBuffer.pos > 0 { sawInput = true }
            midFrame = rc != 0
        }
        return (inBuffer.pos, outBuffer.pos)
    }

    mutating func release() { ZSTD_freeDCtx(context) }
}
