import Foundation
import SystemPackage

/// A bounded single-producer/single-consumer queue of fixed-size byte buffers, recycled so the
/// steady state allocates nothing. The producer (read + decompress) and the consumer (tar parse +
/// write files) run on two threads; the bound keeps memory flat when one side is slower.
///
/// Hashing is shared work: the stream of data chunks (the tar: the diffID) and, for a compressed
/// blob, the stream of the blob's own chunks (the blob digest) are each hashed strictly in order
/// by whichever side has time — the producer when the consumer is behind, the consumer otherwise
/// (blob chunks then travel through the queue only to be hashed). A copy of the blob (the store's
/// `blobs/`) is written from the same bytes as they are hashed.
final class ChunkPipe: @unchecked Sendable {
    /// What a chunk carries.
    enum Kind: Int { case data = 0, blob = 1 }

    struct Chunk {
        let base: UnsafeMutableRawPointer
        let count: Int
        var kind: Kind = .data
        var sequence = 0
        var hashed = true
    }

    /// Where each side waited for the other, in seconds.
    struct Waits: Sendable, Equatable {
        /// The producer, for a free buffer (the consumer was behind).
        var producer: Double = 0
        /// The consumer, for a filled one (the producer was behind).
        var consumer: Double = 0
    }

    let chunkSize: Int
    private let capacity: Int
    private let lock = NSCondition()
    private var ready: [Chunk] = []
    private var readyHead = 0
    private var spare: [UnsafeMutableRawPointer] = []
    /// Every buffer this pipe allocated: freed with the pipe, wherever they are then (a side that
    /// stopped on an error may still hold one it never pushed or recycled).
    private var buffers: [UnsafeMutableRawPointer] = []
    private var finished = false
    private var failure: LayerError?
    private var closed = false
    private(set) var waits = Waits()

    /// One hashed stream (guarded by `hashLock`).
    private struct SharedHash {
        var hasher = SHA256Hasher()
        var lastHashed = -1
        var copyFD: Int32?
        var copyError: LayerError?
    }
    private var streams: [SharedHash?] = [nil, nil]
    private let hashLock = NSLock()
    /// Which streams are hashed (set before the producer starts pushing).
    private var hashed: [Bool] = [false, false]
    /// Chunks pushed per stream (guarded by `lock`).
    private var pushed: [Int] = [0, 0]

    init(chunkSize: Int = 1 << 20, capacity: Int = 8) {
        self.chunkSize = chunkSize
        self.capacity = capacity
    }

    deinit {
        for p in buffers { p.deallocate() }
    }

    // MARK: Shared hashing

    /// Turns on shared hashing of the chunks of `kind` pushed from now on; `copyFD` also gets
    /// them, in order, as they are hashed.
    func enableSharedHash(_ kind: Kind = .data, copyingTo copyFD: Int32? = nil) {
        hashLock.lock()
        streams[kind.rawValue] = SharedHash(copyFD: copyFD)
        hashLock.unlock()
        hashed[kind.rawValue] = true
    }

    /// The digest of every chunk of `kind` pushed; complete once the consumer has taken every
    /// chunk (or `hashQueuedChunks` ran). Throws a failed write of the copy.
    func sharedDigest(_ kind: Kind = .data) throws(LayerError) -> Digest? {
        hashLock.lock()
        defer { hashLock.unlock() }
        guard let stream = streams[kind.rawValue] else { return nil }
        if let error = stream.copyError { throw error }
        return stream.hasher.finalize()
    }

    /// Hashes (and copies) `chunk` if it is the next of its stream; a chunk hashed already is
    /// left alone. The caller holds `hashLock`.
    private func hash(_ chunk: Chunk) {
        guard var stream = streams[chunk.kind.rawValue], stream.lastHashed == chunk.sequence - 1 else { return }
        let bytes = UnsafeRawBufferPointer(start: chunk.base, count: chunk.count)
        stream.hasher.update(bytes)
        stream.lastHashed = chunk.sequence
        if let fd = stream.copyFD, stream.copyError == nil, chunk.count > 0 {
            do throws(Errno) { try DataCopy.writeAll(fd, chunk.base, chunk.count, at: nil) } catch {
                stream.copyError = LayerError(.system(error), "cannot write the copy of the blob: \(error.description)")
            }
        }
        streams[chunk.kind.rawValue] = stream
    }

    /// Hashes bytes that follow every pushed chunk of `kind` (the rest of a blob read after a
    /// decoding error), after `hashQueuedChunks`.
    func hashMore(_ kind: Kind, _ bytes: UnsafeRawBufferPointer) {
        hashLock.lock()
        defer { hashLock.unlock() }
        guard var stream = streams[kind.rawValue] else { return }
        stream.hasher.update(bytes)
        streams[kind.rawValue] = stream
    }

    /// Makes sure every pushed chunk of `kind` is hashed, hashing on the caller's thread those
    /// still queued (the producer, when the consumer may have stopped and the blob's digest is
    /// still wanted). A chunk the consumer took is hashed by it at once: this waits for that.
    func hashQueuedChunks(_ kind: Kind) {
        while true {
            lock.lock()
            let queued = Array(ready[readyHead...])
            let count = pushed[kind.rawValue]
            lock.unlock()
            hashLock.lock()
            for chunk in queued where chunk.kind == kind { hash(chunk) }
            let done = (streams[kind.rawValue]?.lastHashed ?? count - 1) >= count - 1
            hashLock.unlock()
            if done { return }
            usleep(100)
        }
    }

    // MARK: Producer side

    /// A buffer of `chunkSize` bytes to fill, or nil once the consumer has closed the pipe.
    /// Blocks while `capacity` buffers are in flight.
    func acquire() -> UnsafeMutableRawPointer? {
        lock.lock()
        defer { lock.unlock() }
        if !closed && spare.isEmpty && buffers.count >= capacity {
            let start = Self.now()
            while !closed && spare.isEmpty && buffers.count >= capacity { lock.wait() }
            waits.producer += Self.now() - start
        }
        if closed { return nil }
        if let p = spare.popLast() { return p }
        let p = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
        buffers.append(p)
        return p
    }

    /// Hands a filled buffer to the consumer: tar bytes (`.data`), or the blob's own bytes
    /// (`.blob`: only to be hashed and copied). Returns false when the consumer has closed the
    /// pipe (the buffer is then taken back).
    @discardableResult
    func push(_ base: UnsafeMutableRawPointer, count: Int, kind: Kind = .data) -> Bool {
        var chunk = Chunk(base: base, count: count, kind: kind)
        if hashed[kind.rawValue] {
            lock.lock()
            chunk.sequence = pushed[kind.rawValue]
            pushed[kind.rawValue] += 1
            let consumerBehind = ready.count - readyHead >= 2
            lock.unlock()
            chunk.hashed = false
            if consumerBehind && hashLock.try() {
                hash(chunk)
                chunk.hashed = streams[kind.rawValue]!.lastHashed == chunk.sequence
                hashLock.unlock()
            }
        }
        lock.lock()
        defer { lock.unlock() }
        if closed || (kind == .blob && chunk.hashed) {
            // A blob chunk the producer hashed itself goes straight back to the pool.
            spare.append(base)
            lock.broadcast()
            return !closed
        }
        ready.append(chunk)
        lock.broadcast()
        return true
    }

    /// Gives an unused buffer back.
    func giveBack(_ base: UnsafeMutableRawPointer) {
        lock.lock()
        spare.append(base)
        lock.broadcast()
        lock.unlock()
    }

    /// Ends the stream, normally (nil) or with the producer's error.
    func finish(_ error: LayerError?) {
        lock.lock()
        finished = true
        failure = error
        lock.broadcast()
        lock.unlock()
    }

    // MARK: Consumer side

    /// The next data chunk; nil at the end of the stream. Blob chunks met on the way are hashed
    /// (and copied) here and recycled. Throws the producer's error.
    func next() throws(LayerError) -> Chunk? {
        while let chunk = try take() {
            if !chunk.hashed {
                hashLock.lock()
                hash(chunk)
                hashLock.unlock()
            }
            if chunk.kind == .data { return chunk }
            recycle(chunk)
        }
        return nil
    }

    private func take() throws(LayerError) -> Chunk? {
        lock.lock()
        defer { lock.unlock() }
        if readyHead == ready.count && !finished {
            let start = Self.now()
            while readyHead == ready.count && !finished { lock.wait() }
            waits.consumer += Self.now() - start
        }
        if readyHead < ready.count {
            let chunk = ready[readyHead]
            readyHead += 1
            if readyHead > 64 && readyHead * 2 > ready.count {
                ready.removeFirst(readyHead)
                readyHead = 0
            }
            return chunk
        }
        if let failure { throw failure }
        return nil
    }

    /// Returns a consumed chunk's buffer to the pool.
    func recycle(_ chunk: Chunk) { giveBack(chunk.base) }

    /// The consumer stops reading: the producer's next acquire or push fails and it winds down.
    func close() {
        lock.lock()
        closed = true
        lock.broadcast()
        lock.unlock()
    }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
