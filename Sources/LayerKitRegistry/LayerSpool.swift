import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// One layer's bytes between its download and the unpack pipeline: a FIFO with one writer
/// (the download task, async) and one reader (the feeding thread, blocking).
///
/// - While the layer is *active* (the unpack is reading it) the download hands its buffers over
///   in memory, and waits when `memoryLimit` bytes are queued: the unpack sets the pace, nothing
///   touches the disk.
/// - Before that (later layers downloading while earlier ones are applied) the bytes are spooled
///   to an unlinked temporary file and read back when the layer's turn comes.
/// - The reader never gets the blob's last byte before the download has verified the digest
///   (`finish()`): a download that fails leaves the unpack with a truncated blob, whose digest
///   check then fails for certain, so nothing unverified can be committed.
final class LayerSpool: @unchecked Sendable {
    /// The blob's size (from its descriptor).
    let size: Int64
    let memoryLimit: Int
    private let spoolDirectory: String

    private let condition = NSCondition()
    private var queue = [ByteBuffer]()
    private var queuedBytes = 0
    private var spoolFD: Int32 = -1
    private var spooledEnd: Int64 = 0      // bytes written to the spool file
    private var spoolRead: Int64 = 0       // bytes of it handed to the reader
    private var delivered: Int64 = 0       // bytes handed to the reader in all
    private var active = false
    private var finished = false
    private var failure: (any Error)?
    private var readerGone = false
    private var roomWaiters = [CheckedContinuation<Void, Never>]()

    init(size: Int64, spoolDirectory: String, memoryLimit: Int = 4 << 20) {
        self.size = size
        self.spoolDirectory = spoolDirectory
        self.memoryLimit = memoryLimit
    }

    deinit { if spoolFD >= 0 { close(spoolFD) } }

    /// Why the reader stopped early: the download stops with this.
    struct ReaderGone: Error, CustomStringConvertible {
        var description: String { "the unpack stopped reading" }
    }

    // MARK: Writer (the download)

    /// Adds a buffer at the end. Waits while the layer is active and the queue is full.
    func append(_ buffer: ByteBuffer) async throws {
        while true {
            switch try enqueue(buffer) {
            case .queued:
                return
            case .full:
                await waitForRoom()
            case .toSpool:
                // Not read yet: spool. The writer is the only one extending the file, so the write
                // can happen unlocked; the reader sees the bytes once `spooledEnd` says so.
                try spool(buffer)
                return
            }
        }
    }

    private enum Enqueued { case queued, full, toSpool }

    private func enqueue(_ buffer: ByteBuffer) throws -> Enqueued {
        condition.lock()
        defer { condition.unlock() }
        if readerGone || failure != nil { throw ReaderGone() }
        guard active else { return .toSpool }
        guard queuedBytes < memoryLimit else { return .full }
        queue.append(buffer)
        queuedBytes += buffer.readableBytes
        condition.broadcast()
        return .queued
    }

    private func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if !parkIfFull(continuation) { continuation.resume() }
        }
    }

    /// Keeps the continuation to resume when there is room; false when there is room already.
    private func parkIfFull(_ continuation: CheckedContinuation<Void, Never>) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard queuedBytes >= memoryLimit, !readerGone, failure == nil, active else { return false }
        roomWaiters.append(continuation)
        return true
    }

    private func spool(_ buffer: ByteBuffer) throws {
        if spoolFD < 0 { spoolFD = try Self.makeTemporaryFile(in: spoolDirectory) }
        let offset = spooledEnd
        var written = 0
        try buffer.withUnsafeReadableBytes { raw in
            while written < raw.count {
                let n = pwrite(spoolFD, raw.baseAddress! + written, raw.count - written, off_t(offset) + off_t(written))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw SpoolError(description: "cannot spool the layer in \(spoolDirectory): \(String(cString: strerror(errno)))") }
                written += n
            }
        }
        condition.lock()
        spooledEnd += Int64(written)
        condition.broadcast()
        condition.unlock()
    }

    /// Every byte arrived and the digest checked out: the reader may take the last byte.
    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// The download failed: the reader ends without the last byte.
    func fail(_ error: any Error) {
        condition.lock()
        if failure == nil { failure = error }
        let waiters = roomWaiters
        roomWaiters = []
        condition.broadcast()
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Reader (the feeding thread)

    /// From now on the download hands its buffers over in memory.
    func activate() {
        condition.lock()
        active = true
        condition.broadcast()
        condition.unlock()
    }

    /// The reader stopped (the unpack failed or is done): the download ends.
    func readerStopped() {
        condition.lock()
        readerGone = true
        let waiters = roomWaiters
        roomWaiters = []
        condition.broadcast()
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }

    enum Piece {
        /// Bytes from memory.
        case buffer(ByteBuffer)
        /// This many bytes were copied into the scratch buffer from the spool file.
        case copied(Int)
        /// Every byte, verified.
        case end
        /// The download failed: stop without the rest.
        case failed
    }

    /// The next bytes, waiting for them; never the last byte before `finish()`.
    func next(scratch: UnsafeMutableRawBufferPointer) -> Piece {
        condition.lock()
        while true {
            if failure != nil { condition.unlock(); return .failed }
            if readerGone { condition.unlock(); return .failed }
            // Everything but the last byte may go before the digest is verified.
            let allowed = (finished ? size : max(0, size - 1)) - delivered
            let inFile = spooledEnd - spoolRead
            if allowed > 0 && inFile > 0 {
                let count = Int(min(Int64(scratch.count), inFile, allowed))
                let offset = spoolRead
                let fd = spoolFD
                condition.unlock()
                var done = 0
                while done < count {
                    let n = pread(fd, scratch.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { fail(SpoolError(description: "cannot read the spooled layer back")); return .failed }
                    done += n
                }
                condition.lock()
                spoolRead += Int64(count)
                delivered += Int64(count)
                condition.unlock()
                return .copied(count)
            }
            if allowed > 0 && inFile == 0, !queue.isEmpty {
                var buffer = queue[0]
                if Int64(buffer.readableBytes) <= allowed {
                    queue.removeFirst()
                } else {
                    // Hold back the tail (the last byte) until the digest is verified.
                    buffer = queue[0].readSlice(length: Int(allowed))!
                }
                queuedBytes -= buffer.readableBytes
                delivered += Int64(buffer.readableBytes)
                let waiters = queuedBytes < memoryLimit ? roomWaiters : []
                if !waiters.isEmpty { roomWaiters = [] }
                condition.unlock()
                for waiter in waiters { waiter.resume() }
                return .buffer(buffer)
            }
            if finished && delivered == size { condition.unlock(); return .end }
            condition.wait()
        }
    }

    struct SpoolError: Error, CustomStringConvertible {
        var description: String
    }

    /// An unlinked file in `directory` (O_TMPFILE where the file system has it).
    static func makeTemporaryFile(in directory: String) throws -> Int32 {
        // O_TMPFILE is __O_TMPFILE | O_DIRECTORY; Glibc's module does not export the macro.
        let temporaryFileFlag: Int32 = 0o20000000 | O_DIRECTORY
        let fd = open(directory, O_RDWR | O_CLOEXEC | temporaryFileFlag, 0o600)
        if fd >= 0 { return fd }
        var template = Array("\(directory)/.layertool-spool-XXXXXX".utf8CString)
        let made = mkstemp(&template)
        guard made >= 0 else {
            throw SpoolError(description: "cannot create a spool file in \(directory): \(String(cString: strerror(errno)))")
        }
        _ = fcntl(made, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return made
    }
}
