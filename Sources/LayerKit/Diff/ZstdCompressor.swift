import CZstd
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// zstd through libzstd's streaming API, with its own worker threads.
final class ZstdCompressor: BlobCompressor {
    private let context: OpaquePointer
    private let out: UnsafeMutableRawPointer
    private let outSize = ZSTD_CStreamOutSize()

    init(level: Int32, workers: Int32) throws(LayerError) {
        context = ZSTD_createCCtx()
        out = .allocate(byteCount: outSize, alignment: 16)
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        if workers > 1 { _ = ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, workers) }
    }

    deinit {
        ZSTD_freeCCtx(context)
        out.deallocate()
    }

    private func run(_ bytes: UnsafeRawBufferPointer, _ mode: ZSTD_EndDirective, _ sink: BlobSink) throws(LayerError) {
        var input = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
        while true {
            var output = ZSTD_outBuffer(dst: out, size: outSize, pos: 0)
            let remaining = ZSTD_compressStream2(context, &output, &input, mode)
            if ZSTD_isError(remaining) != 0 {
                throw LayerError(.input, "zstd: \(String(cString: ZSTD_getErrorName(remaining)))")
            }
            try sink.write(UnsafeRawBufferPointer(start: out, count: output.pos))
            if mode == ZSTD_e_continue ? input.pos == input.size : remaining == 0 { break }
        }
    }

    func feed(_ bytes: UnsafeRawBufferPointer, into sink: BlobSink) throws(LayerError) { try run(bytes, ZSTD_e_continue, sink) }
    func finish(into sink: BlobSink) throws(LayerError) {
        try run(UnsafeRawBufferPointer(start: nil, count: 0), ZSTD_e_end, sink)
    }
}
