import Foundation

/// A bounded single-producer/single-consumer queue of fixed-size byte buffers, recycled so the
/// steady state allocates nothing. The producer (decompress + hash) and the consumer (tar parse +
/// write files) run on two threads; the bound keeps memory flat when one side is slower.
final class ChunkPipe: @unchecked Sendable {
    struct Chunk {
        let base: UnsafeMutableRawPointer
        let count: Int
        var sequence = 0
        var hashed = true
    }

    let chunkSize: Int
    private let capacity: Int
    private let lock = NSCondition()
    private var ready: [Chunk] = []
    private var readyHead = 0
    private var spare: [UnsafeMutableRawPointer] = []
    private var allocated = 0
    private var finished = false
    private var failure: LayerError?
    private var closed = false

    // Shared hashing of the stream (the diffID of a compressed layer). The producer hashes a chunk
    // itself when the consumer is behind (it has time to spare); otherwise the consumer hashes it
    // when it takes it. Chunks are hashed strictly in order, under `hashLock`.
    private var sharedHasher: SHA256Hasher?
    private let hashLock = NSLock()
    private var lastHashed = -1
    private var pushed = 0

    /// Turns on shared hashing of everything pushed from now on.
    func enableSharedHash() { sharedHasher = SHA256Hasher() }

    /// The digest of everything pushed; valid once the consumer has taken every chunk.
    func sharedDigest() -> Digest? {
        hashLock.lock()
        defer { hashLock.unlock() }
        return sharedHasher?.finalize()
    }

    private func hash(_ chunk: Chunk) {
        sharedHasher!.update(UnsafeRawBufferPointer(start: chunk.base, count: chunk.count))
        lastHashed = chunk.sequence
    }

    init(chunkSize: Int = 1 << 20, capacity: Int = 8) {
        self.chunkSize = chunkSize
        self.capacity = capacity
    }

    deinit {
        for chunk in ready[readyHead...] { chunk.base.deallocate() }
        for p in spare { p.deallocate() }
    }

    // MARK: producer side

    /// A buffer of `chunkSize` bytes to fill, or nil once the consumer has closed the pipe.
    /// Blocks while `capacity` buffers are in flight.
    func acquire() -> UnsafeMutableRawPointer? {
        lock.lock()
        defer { lock.unlock() }
        while !closed && spare.isEmpty && allocated >= capacity { lock.wait() }
        if closed { return nil }
        if let p = spare.popLast() { return p }
        allocated += 1
        return UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
    }

    /// Hands a filled buffer to the consumer. Returns false when the consumer has closed the pipe
    /// (the buffer is then taken back).
    @discardableResult
    func push(_ base: UnsafeMutableRawPointer, count: Int) -> Bool {
        var chunk = Chunk(base: base, count: count)
        if sharedHasher != nil {
            lock.lock()
            chunk.sequence = pushed
            pushed += 1
            let consumerBehind = ready.count - readyHead >= 2
            lock.unlock()
            chunk.hashed = false
            if consumerBehind && hashLock.try() {
                if lastHashed == chunk.sequence - 1 {
                    hash(chunk)
                    chunk.hashed = true
                }
                hashLock.unlock()
            }
        }
        lock.lock()
        defer { lock.unlock() }
        if closed {
            spare.append(base)
            return false
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

    // MARK: consumer side

    /// The next filled chunk; nil at the end of the stream. Throws the producer's error.
    func next() throws(LayerError) -> Chunk? {
        guard let chunk = try take() else { return nil }
        if !chunk.hashed {
            hashLock.lock()
            hash(chunk)
            hashLock.unlock()
        }
        return chunk
    }

    private func take() throws(LayerError) -> Chunk? {
        lock.lock()
        defer { lock.unlock() }
        while readyHead == ready.count && !finished { lock.wait() }
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
}
