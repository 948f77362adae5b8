import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Worker threads that create the small regular files of a layer while the apply engine goes on
/// parsing the archive: file creation is where an unpack of many small files spends its time, and
/// ext4 creates files in different dirs (and, with its journal, in the same one) in parallel.
///
/// The engine hands over only files whose creation nothing else depends on, and calls `drain()`
/// before anything that could: a removal, a hardlink, a whiteout, a name this layer already wrote,
/// a parent dir not open yet, closing a dir fd a file may still need, and the end of the layer.
/// So the tree is the one a serial apply makes. When more files wait than the workers take, the
/// engine's thread creates some itself rather than wait, so a pool never makes an apply slower
/// than the slower of parsing and creating.
final class FileCreationPool: @unchecked Sendable {
    /// Files claimed by a thread at a time: one lock round trip per batch, not per file.
    private static let batchSize = 16
    /// At most this many files or bytes wait; beyond, the engine's thread helps.
    private static let maxWaitingFiles = 512
    private static let maxWaitingBytes = 8 << 20

    private let condition = NSCondition()
    private var queue: [PendingFile] = []
    private var head = 0
    private var waitingBytes = 0
    private var inProgress = 0
    private var flushing = false
    private var stopping = false
    private var liveWorkers = 0
    private var failure: (sequence: Int, error: LayerError)?
    private var warnings: [(sequence: Int, message: String)] = []
    private var allocated: Int64 = 0
    private let umask: mode_t
    /// Files handed over since the last drain (the engine's thread only).
    private(set) var pendingCount = 0

    init(workers: Int, umask: mode_t) {
        self.umask = umask
        liveWorkers = workers
        for index in 0..<workers {
            let thread = Thread { [self] in self.workerLoop() }
            thread.name = "layerkit-create-\(index)"
            thread.start()
        }
    }

    /// Hands a file over. Throws the first failure a worker met, so the apply stops early.
    func submit(_ file: PendingFile) throws(LayerError) {
        condition.lock()
        if let failure {
            condition.unlock()
            throw failure.error
        }
        queue.append(file)
        waitingBytes += file.data.count
        pendingCount += 1
        let waiting = queue.count - head
        if waiting >= Self.batchSize { condition.signal() }
        let helps = waiting > Self.maxWaitingFiles || waitingBytes > Self.maxWaitingBytes
        condition.unlock()
        if helps { createBatch() }
    }

    /// Waits until every file handed over exists (creating some on this thread), then throws the
    /// failure of the earliest entry that failed, if any. Returns the warnings raised, with
    /// their entry numbers, and the bytes the files take on disk (when measured).
    func drain() throws(LayerError) -> (warnings: [(sequence: Int, message: String)], allocatedBytes: Int64) {
        guard pendingCount > 0 else { return ([], 0) }
        condition.lock()
        flushing = true
        condition.broadcast()
        condition.unlock()
        while createBatch() {}
        condition.lock()
        while inProgress > 0 { condition.wait() }
        flushing = false
        pendingCount = 0
        let result = (warnings, allocated)
        warnings.removeAll()
        allocated = 0
        let failed = failure?.error
        condition.unlock()
        if let failed { throw failed }
        return result
    }

    /// Stops the workers once the files already claimed are done; files still waiting are dropped
    /// (the apply failed: its target is thrown away).
    func shutdown() {
        condition.lock()
        stopping = true
        queue.removeAll()
        head = 0
        waitingBytes = 0
        condition.broadcast()
        while liveWorkers > 0 || inProgress > 0 { condition.wait() }
        condition.unlock()
    }

    // MARK: - Creating

    private func workerLoop() {
        condition.lock()
        while true {
            while !stopping && queue.count - head < (flushing ? 1 : Self.batchSize) { condition.wait() }
            if stopping { break }
            let batch = claim()
            condition.unlock()
            let outcomes = create(batch)
            condition.lock()
            record(outcomes)
        }
        liveWorkers -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Creates one batch on the calling thread; false if nothing was waiting.
    @discardableResult
    private func createBatch() -> Bool {
        condition.lock()
        guard queue.count > head, !stopping else {
            condition.unlock()
            return false
        }
        let batch = claim()
        condition.unlock()
        let outcomes = create(batch)
        condition.lock()
        record(outcomes)
        condition.unlock()
        return true
    }

    /// Takes the next batch off the queue (under the lock). The batch is a copy: a slice would
    /// keep the queue's storage shared, and the engine's next append would copy the whole queue.
    private func claim() -> [PendingFile] {
        let end = min(head + Self.batchSize, queue.count)
        var batch = [PendingFile]()
        batch.reserveCapacity(end - head)
        for index in head..<end {
            batch.append(queue[index])
            waitingBytes -= queue[index].data.count
        }
        head = end
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 4096 {
            queue.removeFirst(head)
            head = 0
        }
        inProgress += 1
        return batch
    }

    private func create(_ batch: [PendingFile]) -> [(Int, Result<PendingFile.Outcome, LayerError>)] {
        batch.map { file in
            do throws(LayerError) {
                return (file.sequence, .success(try file.create(umask: umask)))
            } catch {
                var error = error
                if error.entry == nil { error.entry = file.path.description }
                return (file.sequence, .failure(error))
            }
        }
    }

    /// Keeps what a batch gave (under the lock) and wakes a drain waiting for it.
    private func record(_ outcomes: [(Int, Result<PendingFile.Outcome, LayerError>)]) {
        for (sequence, result) in outcomes {
            switch result {
            case .success(let outcome):
                allocated += outcome.allocatedBytes
                for message in outcome.warnings { warnings.append((sequence, message)) }
            case .failure(let error):
                if failure == nil || sequence < failure!.sequence { failure = (sequence, error) }
            }
        }
        inProgress -= 1
        condition.broadcast()
    }
}
