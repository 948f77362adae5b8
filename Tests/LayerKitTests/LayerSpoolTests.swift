import Foundation
import LayerKit
@testable import LayerKitRegistry
import NIOCore
import Testing

// The spool between a layer's download and the unpack: buffers in memory while the layer is
// being read, a spool file before; the last byte held back until the digest is verified.
@Suite struct LayerSpoolTests {
    static func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

    /// Reads everything the spool hands out until it ends or fails.
    static func drain(_ spool: LayerSpool) -> (bytes: [UInt8], ended: Bool) {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 7, alignment: 1)
        defer { scratch.deallocate() }
        var out = [UInt8]()
        while true {
            switch spool.next(scratch: scratch) {
            case .buffer(let b): out += b.readableBytesView
            case .copied(let n): out += scratch[0..<n]
            case .end: return (out, true)
            case .failed: return (out, false)
            }
        }
    }

    /// Drains on a thread of its own, as the feeding thread does (its waits block a thread).
    static func drainOnThread(_ spool: LayerSpool) -> Task<(bytes: [UInt8], ended: Bool), Never> {
        Task {
            await withCheckedContinuation { continuation in
                Thread { continuation.resume(returning: drain(spool)) }.start()
            }
        }
    }

    @Test func spooledThenInMemoryKeepsTheOrderAndHoldsTheLastByte() async throws {
        let tmp = TempDir("spool")
        let data = (0..<100).map { UInt8($0) }
        let spool = LayerSpool(size: 100, spoolDirectory: tmp.path, memoryLimit: 16)
        // Not active: these go to the spool file (which has no name in the dir).
        try await spool.append(Self.buffer(Array(data[0..<40])))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? ["?"]).isEmpty)
        spool.activate()
        let reader = Self.drainOnThread(spool)
        for start in stride(from: 40, to: 100, by: 10) { try await spool.append(Self.buffer(Array(data[start..<(start + 10)]))) }
        try await Task.sleep(for: .milliseconds(50))
        spool.finish()
        let (bytes, ended) = await reader.value
        #expect(ended)
        #expect(bytes == data)
    }

    @Test func aFailedDownloadNeverDeliversTheLastByte() async throws {
        let tmp = TempDir("spool-fail")
        let spool = LayerSpool(size: 10, spoolDirectory: tmp.path)
        spool.activate()
        try await spool.append(Self.buffer(Array(repeating: 7, count: 10)))
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
        defer { scratch.deallocate() }
        // Everything but the last byte is there to read (so the call does not wait).
        guard case .buffer(let first) = spool.next(scratch: scratch) else { Issue.record("expected bytes"); return }
        #expect(first.readableBytes == 9, "all but the last byte")
        spool.fail(RegistryError(.digestMismatch, "bad"))
        guard case .failed = spool.next(scratch: scratch) else { Issue.record("expected the failure"); return }
        await #expect(throws: LayerSpool.ReaderGone.self) { try await spool.append(Self.buffer([1])) }
    }

    @Test func aReaderThatStopsEndsTheDownload() async throws {
        let tmp = TempDir("spool-stop")
        let spool = LayerSpool(size: 1000, spoolDirectory: tmp.path, memoryLimit: 8)
        spool.activate()
        try await spool.append(Self.buffer(Array(repeating: 1, count: 8)))
        // The queue is full: the next append waits, until the reader goes away.
        let writer = Task { try await spool.append(Self.buffer(Array(repeating: 2, count: 8))) }
        try await Task.sleep(for: .milliseconds(50))
        spool.readerStopped()
        await #expect(throws: LayerSpool.ReaderGone.self) { try await writer.value }
    }
}
