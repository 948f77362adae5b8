import Foundation
import LayerKit
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// THE SEAM between downloads and today's unpack API, kept in this one file: `Unpacker` reads
/// layers from `LayerSource.fileDescriptor`, so each layer gets a socket pair whose read end is
/// its source, and one thread copies each layer's spool into its write end, layer after layer in
/// the order the unpack reads them (it activates a layer's spool when it gets to it).
///
/// A native stream source in LayerKit (the pipeline pulling buffers from a `LayerSpool` itself)
/// replaces this file: nothing else in the module knows about the sockets.
///
/// Sockets rather than pipes: `send(MSG_NOSIGNAL)` fails with EPIPE instead of raising SIGPIPE
/// when the reader is gone, and the library sets no signal disposition.
final class PipeLayerFeeder: @unchecked Sendable {
    private let spools: [LayerSpool]
    private var readEnds: [Int32] = []
    private var writeEnds: [Int32] = []
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var started = false

    init(spools: [LayerSpool]) throws(RegistryError) {
        self.spools = spools
        for _ in spools {
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                closeAll()
                throw RegistryError(.configuration, "cannot create a socket pair: \(String(cString: strerror(errno)))")
            }
            // Half-duplex: the reader never writes.
            shutdown(pair[0], Int32(SHUT_WR))
            readEnds.append(pair[0])
            writeEnds.append(pair[1])
        }
    }

    deinit { closeAll() }

    /// The layer sources to give the unpack, in order.
    var sources: [LayerSource] { readEnds.map { .fileDescriptor($0) } }

    /// Starts the feeding thread.
    func start() {
        started = true
        let thread = Thread { [self] in
            self.feed()
            self.done.signal()
        }
        thread.name = "layerkit-registry-feed"
        thread.start()
    }

    /// After the unpack returned: stops the feeding (its sends fail once the read ends are
    /// closed, its waits end with `readerStopped`) and waits for the thread.
    func stop() {
        for spool in spools { spool.readerStopped() }
        lock.lock()
        for i in readEnds.indices where readEnds[i] >= 0 {
            close(readEnds[i])
            readEnds[i] = -1
        }
        lock.unlock()
        if started { done.wait() }
        closeAll()
    }

    private func feed() {
        let scratchSize = 1 << 20
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: scratchSize, alignment: 64)
        defer { scratch.deallocate() }
        for (index, spool) in spools.enumerated() {
            spool.activate()
            var ok = true
            reading: while true {
                switch spool.next(scratch: scratch) {
                case .buffer(let buffer):
                    ok = buffer.withUnsafeReadableBytes { sendAll($0, to: index) }
                case .copied(let count):
                    ok = sendAll(UnsafeRawBufferPointer(rebasing: scratch[0..<count]), to: index)
                case .end:
                    break reading
                case .failed:
                    ok = false
                }
                if !ok { break reading }
            }
            // EOF for this layer. After a failure, EOF without the last byte: the unpack fails.
            closeWriteEnd(index)
            if !ok {
                for later in (index + 1)..<spools.count { closeWriteEnd(later) }
                return
            }
        }
    }

    private func sendAll(_ bytes: UnsafeRawBufferPointer, to index: Int) -> Bool {
        lock.lock()
        let fd = writeEnds[index]
        lock.unlock()
        guard fd >= 0 else { return false }
        var done = 0
        while done < bytes.count {
            let n = send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    private func closeWriteEnd(_ index: Int) {
        lock.lock()
        if writeEnds[index] >= 0 {
            close(writeEnds[index])
            writeEnds[index] = -1
        }
        lock.unlock()
    }

    private func closeAll() {
        lock.lock()
        for fd in readEnds + writeEnds where fd >= 0 { close(fd) }
        readEnds = readEnds.map { _ in -1 }
        writeEnds = writeEnds.map { _ in -1 }
        lock.unlock()
    }
}
