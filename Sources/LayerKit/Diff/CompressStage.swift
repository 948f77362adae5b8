import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The compressing side of the diff pipeline, on its own thread.
final class CompressStage: @unchecked Sendable {
    let pipe: ChunkPipe
    let sink: BlobSink
    let compressor: any BlobCompressor
    private let finished = DispatchSemaphore(value: 0)
    private(set) var error: LayerError?

    init(pipe: ChunkPipe, sink: BlobSink, compressor: any BlobCompressor) {
        self.pipe = pipe
        self.sink = sink
        self.compressor = compressor
    }

    func start() {
        let t = Thread { [self] in
            do throws(LayerError) {
                while let chunk = try pipe.next() {
                    defer { pipe.recycle(chunk) }
                    try compressor.feed(UnsafeRawBufferPointer(start: chunk.base, count: chunk.count), into: sink)
                }
                try compressor.finish(into: sink)
            } catch {
                self.error = error
                pipe.close()
            }
            finished.signal()
        }
        t.name = "layerkit-compress"
        t.start()
    }

    func wait() { finished.wait() }
}
