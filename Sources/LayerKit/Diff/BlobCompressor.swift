/// Turns the tar stream into the stored blob.
protocol BlobCompressor {
    func feed(_ bytes: UnsafeRawBufferPointer, into sink: BlobSink) throws(LayerError)
    func finish(into sink: BlobSink) throws(LayerError)
}

/// No compression: the tar is the blob.
struct PassthroughCompressor: BlobCompressor {
    func feed(_ bytes: UnsafeRawBufferPointer, into sink: BlobSink) throws(LayerError) { try sink.write(bytes) }
    func finish(into sink: BlobSink) throws(LayerError) {}
}
