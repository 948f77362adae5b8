import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A layer blob that arrives over time — a download — from an `async` writer to the unpack
/// pipeline, which reads it on a thread of its own (`LayerSource.stream`). The bytes go into the
/// pipeline as they come: blob digest, inflate, diffID and apply run while the rest is still on
/// its way.
///
/// - While the pipeline reads this layer, the writer's chunks are handed over in memory, at most
///   `memoryLimit` bytes queued: a writer ahead of the unpack waits in `write`, so the unpack sets
///   the pace and nothing touches the disk.
/// - Before that (a later layer downloading while an earlier one is applied), the bytes are
///   spooled to an unlinked file in `spoolDirectory` and read back when the layer's turn comes.
/// - The reader sees the end of the blob only once the writer called `finish()`; `fail(_:)`
///   makes the read fail instead, so a download that breaks off can never pass for a complete
///   (shorter) blob. The pipeline still checks the size, the digest and the diffID itself.
/// - The reader (an import that found the layer in the store meanwhile, an unpack that failed or
///   was cancelled) can stop wanting the bytes: the writer's next `write` throws
///   `LayerStreamError` (`.notNeeded` or `.readerStopped`), and `isWanted` turns false.
///
/// One writer at a time (`write` calls must not overlap) and one reader; a stream is read once.
/// Never more than `size` bytes are accepted.
public final class LayerStream: @unchecked Sendable {
    /// The blob's size, from its descriptor: the stream takes exactly this many bytes.
    public let size: Int64
    /// The most bytes queued in memory while the layer is being read.
    public let memoryLimit: Int
    /// Where bytes are spooled while the layer waits for its turn (an unlinked file).
    public let spoolDirectory: String

    private struct Chunk {
        var bytes: any ContiguousBytes & Sendable
        var offset: Int
        var count: Int
    }

    private let condition = NSCondition()
    private var queue = [Chunk]()
    private var queuedBytes = 0
    private var spoolFD: Int32 = -1
    private var spooledEnd: Int64 = 0   // bytes written to the spool file
    private var spoolRead: Int64 = 0    // bytes of it handed to the reader
    private var accepted: Int64 = 0     // bytes taken from the writer
    private var delivered: Int64 = 0    // bytes handed to the reader
    private var reading = false
    private var readToEnd = false
    private var finished = false
    private var writerFailure: String?
    private var release: LayerStreamError?
    private var roomWaiters = [(id: Int, continuation: CheckedContinuation<Void, Never>)]()
    private var nextWaiterID = 0

    /// A stream for a blob of `size` bytes, spooling into `spoolDirectory` until it is read.
    public init(size: Int64, spoolDirectory: String, memoryLimit: Int = 4 << 20) {
        self.size = max(0, size)
        self.spoolDirectory = spoolDirectory
        self.memoryLimit = max(1, memoryLimit)
    }

    deinit { if spoolFD >= 0 { Glibc.close(spoolFD) } }

    // MARK: Writer

    /// Adds `chunk` at the end (kept as it is, without a copy, while it waits in memory). Waits
    /// while the layer is being read and `memoryLimit` bytes are queued.
    ///
    /// Throws `.notNeeded` once the reader has dismissed the layer, `.readerStopped` once it
    /// stopped reading, `.tooLong` for bytes beyond `size` (the stream then fails), `.cancelled`
    /// when the calling Task is cancelled while it waits, `.spool` when the spool file cannot be
    /// written, `.closed` after `finish()` or `fail(_:)`.
    public func write(_ chunk: some ContiguousBytes & Sendable) async throws(LayerStreamError) {
        let count = chunk.withUnsafeBytes { $0.count }
        while true {
            switch try enqueue(chunk, count: count) {
            case .done:
                return
            case .full:
                try await waitForRoom()
            case .toSpool:
                try spool(chunk, count: count)
                return
            }
        }
    }

    /// Every byte was written (and, for a download, verified): the reader may reach the end. A
    /// stream finished with fewer than `size` bytes fails.
    public func finish() {
        condition.lock()
        defer { condition.unlock() }
        guard !finished, writerFailure == nil else { return }
        if accepted < size {
            writerFailure = "the blob ended after \(accepted) of its \(size) bytes"
        } else {
            finished = true
        }
        condition.broadcast()
    }

    /// The writer cannot deliver the blob (a download that failed): the reader fails with
    /// `reason`, never reaching the end.
    public func fail(_ reason: String) {
        condition.lock()
        if writerFailure == nil && !finished { writerFailure = reason }
        condition.broadcast()
        let waiters = takeRoomWaiters()
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }

    /// False once the reader no longer wants the bytes (the layer was dismissed as not needed,
    /// or the reader stopped): a writer should stop supplying them, or not start.
    public var isWanted: Bool {
        condition.lock()
        defer { condition.unlock() }
        return release == nil
    }

    /// Why the reader no longer wants the bytes, if it does not.
    public var releaseReason: LayerStreamError? {
        condition.lock()
        defer { condition.unlock() }
        return release
    }

    private enum Enqueued { case done, full, toSpool }

    private func enqueue(_ chunk: some ContiguousBytes & Sendable, count: Int) throws(LayerStreamError) -> Enqueued {
        condition.lock()
        defer { condition.unlock() }
        // The writer's own end first: a write after finish() or fail(_:) is its mistake, whatever the reader did since.
        if finished || writerFailure != nil { throw LayerStreamError(.closed, "the stream was already finished or failed") }
        if let release { throw release }
        guard Int64(count) <= size - accepted else {
            writerFailure = "more than the \(size) bytes of the blob were supplied"
            condition.broadcast()
            throw LayerStreamError(.tooLong, "more than the \(size) bytes of the blob were supplied")
        }
        if count == 0 { return .done }
        guard reading else { return .toSpool }
        guard queuedBytes < memoryLimit else { return .full }
        queue.append(Chunk(bytes: chunk, offset: 0, count: count))
        queuedBytes += count
        accepted += Int64(count)
        condition.broadcast()
        return .done
    }

    private func waitForRoom() async throws(LayerStreamError) {
        let id: Int = condition.withLock {
            nextWaiterID += 1
            return nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                if !park(continuation, id: id) { continuation.resume() }
            }
        } onCancel: {
            self.resumeWaiter(id)
        }
        if Task.isCancelled { throw LayerStreamError(.cancelled, "cancelled") }
    }

    /// Keeps the continuation to resume when there is room; false when it need not wait.
    private func park(_ continuation: CheckedContinuation<Void, Never>, id: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard queuedBytes >= memoryLimit, reading, release == nil, writerFailure == nil, !Task.isCancelled else { return false }
        roomWaiters.append((id, continuation))
        return true
    }

    private func resumeWaiter(_ id: Int) {
        condition.lock()
        let index = roomWaiters.firstIndex { $0.id == id }
        let waiter = index.map { roomWaiters.remove(at: $0).continuation }
        condition.unlock()
        waiter?.resume()
    }

    /// The caller holds the lock.
    private func takeRoomWaiters() -> [CheckedContinuation<Void, Never>] {
        let waiters = roomWaiters.map(\.continuation)
        roomWaiters = []
        return waiters
    }

    /// Appends to the spool file. Only the writer extends the file, so the write itself runs
    /// unlocked; the reader sees the bytes once `spooledEnd` says so.
    private func spool(_ chunk: some ContiguousBytes & Sendable, count: Int) throws(LayerStreamError) {
        do throws(Errno) {
            if spoolFD < 0 {
                let fd = try Self.makeUnlinkedFile(in: spoolDirectory)
                condition.withLock { spoolFD = fd }
            }
            let offset = off_t(spooledEnd), fd = spoolFD
            let failed: Errno? = chunk.withUnsafeBytes { raw in
                do throws(Errno) {
                    try DataCopy.writeAll(fd, raw.baseAddress!, raw.count, at: offset)
                    return nil
                } catch {
                    return error
                }
            }
            if let failed { throw failed }
        } catch {
            let failure = LayerStreamError(.spool(error), "cannot spool the layer in \(spoolDirectory): \(error.description)")
            fail(failure.reason)
            throw failure
        }
        condition.lock()
        spooledEnd += Int64(count)
        accepted += Int64(count)
        condition.broadcast()
        condition.unlock()
    }

    /// An unlinked file in `directory` (O_TMPFILE where the file system has it).
    static func makeUnlinkedFile(in directory: String) throws(Errno) -> Int32 {
        // O_TMPFILE is __O_TMPFILE | O_DIRECTORY; Glibc's module does not export the macro.
        let temporaryFileFlag: Int32 = 0o20000000 | O_DIRECTORY
        let fd = open(directory, O_RDWR | O_CLOEXEC | temporaryFileFlag, 0o600)
        if fd >= 0 { return fd }
        var template = Array("\(directory)/.layerkit-spool-XXXXXX".utf8CString)
        let made = mkstemp(&template)
        guard made >= 0 else { throw Errno(rawValue: errno) }
        _ = fcntl(made, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return made
    }

    // MARK: Reader (the pipeline's thread)

    /// The pipeline starts reading: from now on chunks are handed over in memory.
    func beginReading() {
        condition.lock()
        reading = true
        condition.broadcast()
        condition.unlock()
    }

    /// Up to `count` bytes into `buffer`, waiting for them; 0 at the end of the blob (only after
    /// `finish()`). Throws a dismissal at once; the writer's failure, or `.cancelled` once
    /// `cancellation` is set, when the bytes taken before it are read (never the end).
    func read(into buffer: UnsafeMutableRawPointer, count: Int, cancellation: CancellationFlag?) throws(LayerError) -> Int {
        guard count > 0 else { return 0 }
        condition.lock()
        while true {
            if let release {
                condition.unlock()
                throw LayerError(release.kind == .cancelled ? .cancelled : .input, release.reason)
            }
            // Bytes already taken are handed on first; then the writer's failure or a
            // cancellation ends the read (the pipeline checks its own flag between chunks).
            let inFile = spooledEnd - spoolRead
            if inFile > 0 {
                let want = Int(min(Int64(count), inFile))
                let offset = spoolRead, fd = spoolFD
                condition.unlock()
                var done = 0
                while done < want {
                    let n = pread(fd, buffer + done, want - done, off_t(offset) + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else {
                        let reason = n < 0 ? Errno(rawValue: errno).description : "unexpected end of file"
                        throw LayerError(.input, "cannot read the spooled layer back: \(reason)")
                    }
                    done += n
                }
                condition.lock()
                spoolRead += Int64(want)
                delivered += Int64(want)
                condition.unlock()
                return want
            }
            if !queue.isEmpty {
                var copied = 0
                while copied < count, !queue.isEmpty {
                    let n = min(count - copied, queue[0].count)
                    let offset = queue[0].offset
                    queue[0].bytes.withUnsafeBytes { raw in
                        (buffer + copied).copyMemory(from: raw.baseAddress! + offset, byteCount: n)
                    }
                    copied += n
                    if n == queue[0].count {
                        queue.removeFirst()
                    } else {
                        queue[0].offset += n
                        queue[0].count -= n
                    }
                }
                queuedBytes -= copied
                delivered += Int64(copied)
                let waiters = queuedBytes < memoryLimit ? takeRoomWaiters() : []
                condition.unlock()
                for waiter in waiters { waiter.resume() }
                return copied
            }
            if let writerFailure {
                condition.unlock()
                throw LayerError(.input, writerFailure)
            }
            if cancellation?.isCancelled == true {
                condition.unlock()
                throw LayerError(.cancelled, "cancelled")
            }
            if finished {
                readToEnd = true
                condition.unlock()
                return 0
            }
            // Timed, so a cancellation is seen even when no writer wakes the reader.
            _ = condition.wait(until: Date(timeIntervalSinceNow: 0.05))
        }
    }

    /// The pipeline is done with the stream. Unless it read to the end, the writer is told to
    /// stop (`.readerStopped`).
    func endReading() {
        stopWanting(LayerStreamError(.readerStopped, "the unpack stopped reading the layer"), unlessReadToEnd: true)
    }

    // MARK: Owner

    /// The importer does not need this layer (the store has it): the writer's next `write`
    /// throws `.notNeeded` and `isWanted` turns false. A reader, if any, fails.
    public func dismiss() {
        stopWanting(LayerStreamError(.notNeeded, "the layer is not needed: the store has it"), unlessReadToEnd: true)
    }

    /// Stops the stream from the reader's side (an unpack that failed or was cancelled before
    /// reaching this layer): writes throw `.readerStopped` (`.cancelled` with `cancelled`), a
    /// reader blocked in `read` fails.
    public func close(cancelled: Bool = false) {
        stopWanting(cancelled ? LayerStreamError(.cancelled, "cancelled")
                              : LayerStreamError(.readerStopped, "the unpack stopped before reading the layer"),
                    unlessReadToEnd: true)
    }

    private func stopWanting(_ reason: LayerStreamError, unlessReadToEnd: Bool) {
        condition.lock()
        if release == nil && !(unlessReadToEnd && readToEnd) { release = reason }
        queue = []
        queuedBytes = 0
        condition.broadcast()
        let waiters = takeRoomWaiters()
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }
}

/// Why a `LayerStream` refused bytes, or why its reader stopped wanting them.
public struct LayerStreamError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The class of the refusal.
    public enum Kind: Sendable, Equatable {
        /// The importer does not need the layer (the store has it): stop supplying it.
        case notNeeded
        /// The reader stopped (the unpack or import failed, or finished without this layer).
        case readerStopped
        /// The writer's Task, or the operation, was cancelled.
        case cancelled
        /// More bytes than the stream's size were supplied.
        case tooLong
        /// The spool file could not be created or written.
        case spool(Errno)
        /// A write after `finish()` or `fail(_:)`.
        case closed
    }

    /// What happened.
    public let kind: Kind
    /// In a few words.
    public let reason: String

    /// An error of `kind`.
    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { reason }
}

extension LayerStream {
    /// Reads the whole stream into a new file at `path` (for a consumer that must read the blob
    /// twice); the size is checked, the digests are the caller's.
    func copy(to path: String, name: String, cancellation: CancellationFlag?) throws(LayerError) {
        let out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot create a temporary file").inLayer(name) }
        defer { Glibc.close(out) }
        let input = BlobInput(stream: self)
        defer { input.close() }
        let capacity = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer { buffer.deallocate() }
        var total: Int64 = 0
        while true {
            let n = try input.read(into: buffer, count: capacity, cancellation: cancellation)
            if n == 0 { break }
            total += Int64(n)
            do throws(Errno) { try DataCopy.writeAll(out, buffer, n, at: nil) } catch {
                throw LayerError.system(error, entry: nil, "cannot write a temporary file").inLayer(name)
            }
        }
        guard total == size else {
            throw LayerError(.digestMismatch, layer: name, "size mismatch: the blob ends after \(total) bytes, its descriptor says \(size)")
        }
    }
}
