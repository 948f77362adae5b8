import Foundation
import LayerKit
import NIOCore

/// Downloads an image's layer blobs into `LayerStream`s, at most `concurrency` at once, lowest
/// layer first (the unpack reads them bottom up: the one it reads arrives in memory, the next
/// ones spool until their turn).
///
/// - A layer whose stream no longer wants it (`isWanted == false`: the store has it) is not
///   started, and one under way stops at its next chunk: that is no failure.
/// - A download that fails records the error (the first error of the pull is the one reported)
///   and fails every stream, so the unpack ends at once rather than wait for bytes.
/// - Each stream is finished only when its whole blob arrived and hashed to its digest.
struct LayerDownloads: Sendable {
    let client: RegistryClient
    let image: RemoteImage
    /// Per layer: its stream, or nil when it is not to be downloaded.
    let streams: [LayerStream?]
    let concurrency: Int
    let failures: FirstFailure
    let progress: (@Sendable (PullEvent) -> Void)?

    func run() async {
        let client = self.client, image = self.image, streams = self.streams
        let failures = self.failures, progress = self.progress
        let wanted = streams.indices.filter { streams[$0] != nil }
        await withTaskGroup(of: Bool.self) { group in
            var next = 0
            func start() {
                let index = wanted[next]
                next += 1
                let layer = image.layers[index], stream = streams[index]!
                group.addTask {
                    guard stream.isWanted else {
                        progress?(.dismissed(layer: index))
                        return true
                    }
                    let counter = ByteCounter()
                    do throws(RegistryError) {
                        try await client.fetchBlob(layer.descriptor, from: image.reference.repository) { buffer in
                            let count = Int64(buffer.readableBytes)
                            try await stream.write(ByteBufferChunk(buffer: buffer))
                            progress?(.downloading(layer: index, received: counter.add(count), total: layer.descriptor.size))
                        }
                        stream.finish()
                        progress?(.downloaded(layer: index))
                        return true
                    } catch {
                        switch stream.releaseReason?.kind {
                        case .notNeeded:
                            // The store got the layer meanwhile: stopping is what was asked.
                            progress?(.dismissed(layer: index))
                            return true
                        case .readerStopped:
                            // The unpack failed first; its error is the one to report.
                            return false
                        default:
                            failures.record(error)
                            for stream in streams { stream?.fail(error.description) }
                            return false
                        }
                    }
                }
            }
            while next < min(concurrency, wanted.count) { start() }
            while let succeeded = await group.next() {
                if !succeeded { group.cancelAll(); continue }
                if next < wanted.count && !Task.isCancelled { start() }
            }
        }
    }
}

/// A received chunk as the stream keeps it: the buffer itself, not a copy.
struct ByteBufferChunk: ContiguousBytes, Sendable {
    let buffer: ByteBuffer

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }
}

/// The first error of a pull, from whichever side (download or unpack) failed first: the
/// other side's failure is its consequence.
final class FirstFailure: @unchecked Sendable {
    private let lock = NSLock()
    private var error: RegistryError?

    func record(_ error: RegistryError) {
        lock.lock()
        if self.error == nil { self.error = error }
        lock.unlock()
    }

    var first: RegistryError? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }
}

/// Bytes received by one download (its sink runs sequentially).
final class ByteCounter: @unchecked Sendable {
    private var total: Int64 = 0
    func add(_ n: Int64) -> Int64 {
        total += n
        return total
    }
}
