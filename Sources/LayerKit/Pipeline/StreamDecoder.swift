
/// One step of a streaming decompressor: takes what it can from `input`, writes what it can to `output`.
protocol StreamDecoder {
    /// Returns the bytes consumed and produced. Never returns (0, 0) while both buffers have room,
    /// except at the end of a member with no more input.
    mutating func step(_ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer) throws(LayerError) -> (consumed: Int, produced: Int)
    /// True when the stream so far ends exactly at the end of a complete member/frame.
    var isComplete: Bool { get }
    mutating func release()
}

/// Which gzip decoder the pipeline uses.
public enum GzipDecoderKind: String, Sendable, CaseIterable {
    /// Intel's ISA-L inflate: about 1.5x faster than zlib in the pipeline (BENCHMARKS.md).
    case isal
    /// zlib, the reference decoder, kept for comparison.
    case zlib
}
