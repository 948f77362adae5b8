import Foundation
@testable import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// LayerStream: a blob from an async writer (a download) to the pipeline's reading thread. In
// memory while the layer is read, spooled to an unlinked file before; the end only after
// finish(); failures, dismissals and cancellations on either side end the other.
@Suite struct LayerStreamTests {
    /// Reads the stream on a thread of its own (as the pipeline does: its waits block a thread)
    /// in reads of `chunk` bytes, until the end or an error.
    static func drainOnThread(_ stream: LayerStream, chunk: Int = 7,
                              cancellation: CancellationFlag? = nil) -> Task<(bytes: [UInt8], error: LayerError?), Never> {
        Task {
            await withCheckedContinuation { continuation in
                Thread {
                    stream.beginReading()
                    defer { stream.endReading() }
                    let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 1)
                    defer { buffer.deallocate() }
                    var out = [UInt8]()
                    while true {
                        do throws(LayerError) {
                            let n = try stream.read(into: buffer, count: chunk, cancellation: cancellation)
                            if n == 0 { return continuation.resume(returning: (out, nil)) }
                            out += UnsafeRawBufferPointer(start: buffer, count: n)
                        } catch {
                            return continuation.resume(returning: (out, error))
                        }
                    }
                }.start()
            }
        }
    }

    static func names(in dir: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"] }

    @Test func spooledThenInMemoryKeepsTheOrderAndEndsOnlyAfterFinish() async throws {
        let tmp = TempDir("stream")
        let data = (0..<100).map { UInt8($0) }
        let stream = LayerStream(size: 100, spoolDirectory: tmp.path, memoryLimit: 16)
        // Not read yet: these go to the spool file, which has no name in the dir.
        try await stream.write(Array(data[0..<40]))
        #expect(Self.names(in: tmp.path).isEmpty)
        let reader = Self.drainOnThread(stream)
        for start in stride(from: 40, to: 100, by: 10) { try await stream.write(Array(data[start..<(start + 10)])) }
        try await Task.sleep(for: .milliseconds(100))
        // Every byte is there, but the reader waits for finish() to see the end.
        stream.finish()
        let (bytes, error) = await reader.value
        #expect(error == nil)
        #expect(bytes == data)
        #expect(stream.isWanted, "read to its end: nothing to tell the writer")
    }

    @Test func aFailedWriterNeverLetsTheReaderReachTheEnd() async throws {
        let tmp = TempDir("stream-fail")
        let stream = LayerStream(size: 10, spoolDirectory: tmp.path)
        let reader = Self.drainOnThread(stream, chunk: 4)
        try await stream.write([UInt8](repeating: 7, count: 10))
        try await Task.sleep(for: .milliseconds(50))
        stream.fail("the download broke off")
        let (bytes, error) = await reader.value
        #expect(bytes.count == 10)
        #expect(error?.kind == .input && error?.reason == "the download broke off")
        await #expect(throws: LayerStreamError(.closed, "the stream was already finished or failed")) {
            try await stream.write([1])
        }
    }

    @Test func finishingShortOfTheSizeIsAFailure() async throws {
        let tmp = TempDir("stream-short")
        let stream = LayerStream(size: 10, spoolDirectory: tmp.path)
        try await stream.write([UInt8](repeating: 1, count: 6))
        stream.finish()
        let (bytes, error) = await Self.drainOnThread(stream).value
        #expect(bytes.count == 6)
        #expect(error?.reason == "the blob ended after 6 of its 10 bytes")
    }

    @Test func moreThanTheSizeIsRefusedAndFailsTheReader() async throws {
        let tmp = TempDir("stream-long")
        let stream = LayerStream(size: 10, spoolDirectory: tmp.path)
        try await stream.write([UInt8](repeating: 1, count: 8))
        await #expect { try await stream.write([UInt8](repeating: 2, count: 3)) } throws: { error in
            (error as? LayerStreamError)?.kind == .tooLong
        }
        let (_, error) = await Self.drainOnThread(stream).value
        #expect(error?.reason.contains("more than the 10 bytes") == true)
    }

    @Test func aReaderThatStopsEndsAWriterWaitingForRoom() async throws {
        let tmp = TempDir("stream-stop")
        let stream = LayerStream(size: 1000, spoolDirectory: tmp.path, memoryLimit: 8)
        stream.beginReading()
        try await stream.write([UInt8](repeating: 1, count: 8))
        // The queue is full: the next write waits, until the reader goes away.
        let writer = Task { try await stream.write([UInt8](repeating: 2, count: 8)) }
        try await Task.sleep(for: .milliseconds(50))
        stream.endReading()
        await #expect { try await writer.value } throws: { ($0 as? LayerStreamError)?.kind == .readerStopped }
        #expect(!stream.isWanted)
    }

    @Test func aDismissedLayerTellsItsWriterItIsNotNeeded() async throws {
        let tmp = TempDir("stream-dismiss")
        let stream = LayerStream(size: 100, spoolDirectory: tmp.path)
        try await stream.write([UInt8](repeating: 1, count: 10))
        #expect(stream.isWanted)
        stream.dismiss()
        #expect(!stream.isWanted)
        #expect(stream.releaseReason?.kind == .notNeeded)
        await #expect { try await stream.write([1]) } throws: { ($0 as? LayerStreamError)?.kind == .notNeeded }
    }

    @Test func aCancelledWriterStopsWaiting() async throws {
        let tmp = TempDir("stream-cancel-writer")
        let stream = LayerStream(size: 1000, spoolDirectory: tmp.path, memoryLimit: 4)
        stream.beginReading()
        try await stream.write([UInt8](repeating: 1, count: 4))
        let writer = Task { try await stream.write([UInt8](repeating: 2, count: 4)) }
        try await Task.sleep(for: .milliseconds(50))
        writer.cancel()
        await #expect { try await writer.value } throws: { ($0 as? LayerStreamError)?.kind == .cancelled }
    }

    @Test func aWaitingReaderSeesItsCancellation() async throws {
        let tmp = TempDir("stream-cancel-reader")
        let stream = LayerStream(size: 100, spoolDirectory: tmp.path)
        let flag = CancellationFlag()
        let reader = Self.drainOnThread(stream, cancellation: flag)
        try await stream.write([UInt8](repeating: 1, count: 5))
        try await Task.sleep(for: .milliseconds(50))
        // No writer wakes it: the reader notices the flag on its own.
        flag.cancel()
        let (bytes, error) = await reader.value
        #expect(bytes.count == 5)
        #expect(error?.kind == .cancelled)
        await #expect { try await stream.write([1]) } throws: { ($0 as? LayerStreamError)?.kind == .readerStopped }
    }

    /// The fixture's gzip and zstd layers, written in uneven chunks by a task while the unpack
    /// reads them: the same digests and the same tree as an unpack of the files; into a
    /// non-empty destination too (each stream then read once into a file for the two passes).
    @Test func unpackFromStreamsEqualsUnpackFromFiles() async throws {
        let layout = OCIImageLayout(path: fixturesDir + "/busybox")
        let image = try layout.resolve("latest")
        let tmp = TempDir("stream-unpack")
        let fromFiles = try await Unpacker().unpack(Unpacker.inputs(of: image, at: layout.path), to: tmp.sub("files"))

        for existing in [false, true] {
            let dest = tmp.sub(existing ? "streams-existing" : "streams")
            if existing {
                _ = tmp.mkdir(existing ? "streams-existing" : "streams")
                try "kept\n".write(toFile: dest + "/kept", atomically: true, encoding: .utf8)
            }
            let streams = image.layers.map { LayerStream(size: $0.descriptor.size, spoolDirectory: tmp.path, memoryLimit: 64 << 10) }
            let writers = Task {
                for (layer, stream) in zip(image.layers, streams) {
                    let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: layout.path + "/blobs/sha256/" + layer.descriptor.digest.hex)))
                    var offset = 0, step = 1
                    while offset < bytes.count {
                        let end = min(bytes.count, offset + step * 3001)
                        try await stream.write(Array(bytes[offset..<end]))
                        offset = end
                        step = step % 40 + 1
                    }
                    stream.finish()
                }
            }
            let inputs = zip(streams, image.layers).map { stream, layer in
                LayerInput(source: .stream(stream), name: "stream@\(layer.descriptor.digest)",
                           expecting: LayerExpectation(layer.descriptor, diffID: layer.diffID))
            }
            let fromStreams = try await Unpacker().unpack(inputs, to: dest)
            try await writers.value
            #expect(fromStreams.map(\.blobDigest) == fromFiles.map(\.blobDigest))
            #expect(fromStreams.map(\.diffID) == fromFiles.map(\.diffID))
            var expected = TreeSnapshot(tmp.sub("files")), got = TreeSnapshot(dest)
            got.nodes.removeValue(forKey: "kept")
            expected.nodes["."]?.mtime = nil
            got.nodes["."]?.mtime = nil
            #expect(expected.differences(from: got).isEmpty, "\(expected.differences(from: got))")
            #expect(FileManager.default.fileExists(atPath: dest + "/kept") == existing)
        }
        #expect(Self.names(in: tmp.path).sorted() == ["files", "streams", "streams-existing"])
    }
}
