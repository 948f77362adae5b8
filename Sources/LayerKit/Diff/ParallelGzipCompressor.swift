import CIsal
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Parallel gzip, pigz-style: each chunk is deflated on its own worker with the previous 32 KiB
/// as dictionary and ends on a sync flush, so the pieces join into ONE standard deflate stream
/// (one gzip member, readable by every gzip tool). ISA-L's deflate does the work.
final class ParallelGzipCompressor: BlobCompressor, @unchecked Sendable {
    /// One block's work. Jobs and their buffers are reused: fresh 1 MiB buffers for every block
    /// would cost a page fault per 4 KiB.
    final class Job: @unchecked Sendable {
        let input: UnsafeMutableRawPointer
        var inputCount = 0
        var dictionary: [UInt8] = []
        var isLast = false
        var output: UnsafeMutableRawPointer
        var outputCount = 0
        var outputCapacity: Int
        var done = false
        var failure: String?

        init(capacity: Int) {
            input = .allocate(byteCount: capacity, alignment: 64)
            outputCapacity = capacity + capacity / 8 + 4096
            output = .allocate(byteCount: outputCapacity, alignment: 64)
        }

        func load(_ bytes: UnsafeRawBufferPointer, dictionary: [UInt8], isLast: Bool) {
            inputCount = bytes.count
            if bytes.count > 0 { input.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            self.dictionary = dictionary
            self.isLast = isLast
            outputCount = 0
            done = false
            failure = nil
        }

        deinit {
            input.deallocate()
            output.deallocate()
        }
    }

    private var freeJobs: [Job] = []

    private let level: UInt16
    private let lock = NSCondition()
    private var queue: [Job] = []
    private var inFlight: [Job] = []
    private var stopping = false
    private var threads = 0
    private let maxInFlight: Int
    private var crc: UInt32 = 0
    private var total: UInt64 = 0
    private var headerWritten = false
    private var dictionary: [UInt8] = []
    private var pending: UnsafeMutableRawPointer
    private var pendingCount = 0
    private let blockSize: Int

    /// `level` is ISA-L's (0...3); `workers` threads compress blocks of `blockSize` bytes.
    init(level: Int, workers: Int, blockSize: Int = 1 << 20) {
        self.level = UInt16(max(0, min(3, level)))
        self.maxInFlight = workers * 2
        self.blockSize = blockSize
        pending = .allocate(byteCount: blockSize, alignment: 64)
        for i in 0..<max(1, workers) {
            let t = Thread { [self] in self.workerLoop() }
            t.name = "layerkit-deflate-\(i)"
            t.start()
            threads += 1
        }
    }

    deinit {
        lock.lock()
        stopping = true
        lock.broadcast()
        lock.unlock()
        pending.deallocate()
    }

    private func workerLoop() {
        let stream = UnsafeMutablePointer<isal_zstream>.allocate(capacity: 1)
        let levelBufSize = 1 << 22
        let levelBuf = UnsafeMutablePointer<UInt8>.allocate(capacity: levelBufSize)
        defer {
            stream.deallocate()
            levelBuf.deallocate()
        }
        while true {
            lock.lock()
            while queue.isEmpty && !stopping { lock.wait() }
            if queue.isEmpty && stopping { lock.unlock(); return }
            let job = queue.removeFirst()
            lock.unlock()
            Self.compress(job, stream: stream, level: level, levelBuf: levelBuf, levelBufSize: levelBufSize)
            lock.lock()
            job.done = true
            lock.broadcast()
            lock.unlock()
        }
    }

    private static func compress(_ job: Job, stream: UnsafeMutablePointer<isal_zstream>, level: UInt16,
                                 levelBuf: UnsafeMutablePointer<UInt8>, levelBufSize: Int) {
        isal_deflate_init(stream)
        stream.pointee.level = UInt32(level)
        stream.pointee.level_buf = levelBuf
        stream.pointee.level_buf_size = UInt32(levelBufSize)
        stream.pointee.gzip_flag = UInt16(IGZIP_DEFLATE)
        stream.pointee.flush = UInt16(job.isLast ? NO_FLUSH : SYNC_FLUSH)
        stream.pointee.end_of_stream = job.isLast ? 1 : 0
        if !job.dictionary.isEmpty {
            var dict = job.dictionary
            let rc = dict.withUnsafeMutableBufferPointer { isal_deflate_set_dict(stream, $0.baseAddress, UInt32($0.count)) }
            if rc != COMP_OK { job.failure = "isa-l: cannot set dictionary (\(rc))"; return }
        }
        stream.pointee.next_in = job.input.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_in = UInt32(job.inputCount)
        while true {
            stream.pointee.next_out = (job.output + job.outputCount).assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = UInt32(job.outputCapacity - job.outputCount)
            let before = stream.pointee.avail_out
            let rc = isal_deflate(stream)
            if rc != COMP_OK { job.failure = "isa-l deflate error \(rc)"; return }
            job.outputCount += Int(before - stream.pointee.avail_out)
            let state = stream.pointee.internal_state.state
            // isal_deflate returns when the input is used up (and flushed) or the output is full.
            let finished = stream.pointee.avail_in == 0 && stream.pointee.avail_out > 0
                && (!job.isLast || state == ZSTATE_END)
            if finished { return }
            if stream.pointee.avail_out == 0 {
                // Grow the output buffer (incompressible data).
                let bigger = UnsafeMutableRawPointer.allocate(byteCount: job.outputCapacity * 2, alignment: 64)
                bigger.copyMemory(from: job.output, byteCount: job.outputCount)
                job.output.deallocate()
                job.output = bigger
                job.outputCapacity *= 2
            }
        }
    }

    func feed(_ bytes: UnsafeRawBufferPointer, into sink: BlobSink) throws(LayerError) {
        var offset = 0
        while offset < bytes.count {
            let n = min(bytes.count - offset, blockSize - pendingCount)
            (pending + pendingCount).copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
            pendingCount += n
            offset += n
            if pendingCount == blockSize { try submit(isLast: false, sink: sink) }
        }
    }

    func finish(into sink: BlobSink) throws(LayerError) {
        try submit(isLast: true, sink: sink)
        try drain(upTo: 0, sink: sink)
        var trailer = [UInt8](repeating: 0, count: 8)
        for i in 0..<4 { trailer[i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        for i in 0..<4 { trailer[4 + i] = UInt8(truncatingIfNeeded: total >> (8 * UInt64(i))) }
        try sink.write(trailer)
        lock.lock()
        stopping = true
        lock.broadcast()
        lock.unlock()
    }

    private func submit(isLast: Bool, sink: BlobSink) throws(LayerError) {
        if !headerWritten {
            // gzip header: deflate, no name, mtime 0 (reproducible), OS = Unix.
            let header: [UInt8] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03]
            try sink.write(header)
            headerWritten = true
        }
        let chunk = UnsafeRawBufferPointer(start: pending, count: pendingCount)
        crc = crc32_gzip_refl(crc, chunk.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(chunk.count))
        total &+= UInt64(chunk.count)
        let job = freeJobs.popLast() ?? Job(capacity: blockSize)
        job.load(chunk, dictionary: dictionary, isLast: isLast)
        if pendingCount >= 32768 {
            dictionary = Array(UnsafeRawBufferPointer(start: pending + pendingCount - 32768, count: 32768))
        } else {
            dictionary = Array((dictionary + Array(chunk)).suffix(32768))
        }
        pendingCount = 0
        lock.lock()
        queue.append(job)
        inFlight.append(job)
        lock.broadcast()
        lock.unlock()
        try drain(upTo: maxInFlight, sink: sink)
    }

    /// Writes finished jobs in order until at most `limit` are in flight.
    private func drain(upTo limit: Int, sink: BlobSink) throws(LayerError) {
        while true {
            lock.lock()
            guard inFlight.count > limit, let first = inFlight.first else { lock.unlock(); return }
            while !first.done { lock.wait() }
            inFlight.removeFirst()
            lock.unlock()
            if let failure = first.failure { throw LayerError(.input, failure) }
            try sink.write(UnsafeRawBufferPointer(start: first.output, count: first.outputCount))
            freeJobs.append(first)
        }
    }
}
