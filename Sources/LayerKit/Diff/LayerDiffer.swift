import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Turns changes into a layer blob: the tar written on the calling thread while another thread
/// (or two, for gzip) compresses; the diffID and blob digest are computed on the way.
public struct LayerDiffer: Sendable {
    public var options: DiffOptions

    public init(options: DiffOptions = DiffOptions()) { self.options = options }

    /// Writes the layer to `path` (through a temporary name beside it, renamed at the end: on
    /// failure no partial file is left). `-` writes to standard output.
    public func write(_ source: ChangeSource, toFile path: String) throws(LayerError) -> DiffResult {
        try write(source, toFile: path, cancellation: nil)
    }

    /// Writes the layer to `path` off the caller's thread; cancelling the calling Task stops the
    /// walk and the writing, and no partial file is left.
    public func write(_ source: ChangeSource, toFile path: String) async throws(LayerError) -> DiffResult {
        try await BlockingWork.run("layerkit-diff") { (cancellation) throws(LayerError) -> DiffResult in
            try write(source, toFile: path, cancellation: cancellation)
        }
    }

    func write(_ source: ChangeSource, toFile path: String, cancellation: CancellationFlag?) throws(LayerError) -> DiffResult {
        if path == "-" { return try write(source, to: 1, cancellation: cancellation) }
        var existing = stat()
        if stat(path, &existing) == 0 && FileSystem.fileType(existing) != mode_t(LK_S_IFREG) {
            // A device, fifo or socket (`-o /dev/null`, a pipe): write into it, never rename over it.
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw LayerError(.system(Errno(rawValue: errno)), layer: path, "cannot open the output: \(Errno(rawValue: errno).description)")
            }
            defer { close(fd) }
            do throws(LayerError) { return try write(source, to: fd, cancellation: cancellation) } catch { throw error.inLayer(path) }
        }
        let (dir, base) = FileSystem.split(path)
        var template = Array("\(dir)/.\(base).tmp-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else {
            throw LayerError(.system(Errno(rawValue: errno)), layer: path, "cannot create the output file: \(Errno(rawValue: errno).description)")
        }
        let temp = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var done = false
        defer {
            close(fd)
            if !done { unlink(temp) }
        }
        fchmod(fd, 0o644 & ~FileSystem.currentUmask())
        var result: DiffResult
        do throws(LayerError) {
            result = try write(source, to: fd, cancellation: cancellation)
            if options.syncOutput && fsync(fd) != 0 { throw LayerError(.system(Errno(rawValue: errno)), "cannot sync the output: \(Errno(rawValue: errno).description)") }
            if rename(temp, path) != 0 { throw LayerError(.system(Errno(rawValue: errno)), "cannot rename the output into place: \(Errno(rawValue: errno).description)") }
        } catch {
            throw error.inLayer(path)
        }
        done = true
        return result
    }

    /// Writes the layer to an open file descriptor.
    public func write(_ source: ChangeSource, to outputFD: Int32) throws(LayerError) -> DiffResult {
        try write(source, to: outputFD, cancellation: nil)
    }

    /// Writes the layer to an open file descriptor, checking `cancellation` between entries.
    func write(_ source: ChangeSource, to outputFD: Int32, cancellation: CancellationFlag?) throws(LayerError) -> DiffResult {
        let newPath: String
        var oldPath: String? = nil
        var lowerRoot: String? = nil
        switch source {
        case .trees(let old, let new): oldPath = old; newPath = new
        case .upper(let upper, let lower): newPath = upper; lowerRoot = lower
        }
        let newFD = open(newPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard newFD >= 0 else { throw LayerError(.input, layer: newPath, "cannot open directory: \(Errno(rawValue: errno).description)") }
        defer { close(newFD) }
        var oldFD: Int32 = -1
        if let oldPath {
            oldFD = open(oldPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard oldFD >= 0 else { throw LayerError(.input, layer: oldPath, "cannot open directory: \(Errno(rawValue: errno).description)") }
        }
        defer { if oldFD >= 0 { close(oldFD) } }

        // 1. Find the changes. Where every entry of NEW is a change (an upper dir, or a first layer
        // with an empty OLD), they are streamed to the writer during the walk instead (below), so
        // compression starts with the first entry (`streamFullLayers`).
        let changes = ChangeSet(newRootFD: newFD, xattrPolicy: options.xattrPolicy)
        var streaming = false
        do throws(LayerError) {
            if options.streamFullLayers {
                if oldFD < 0 {
                    streaming = true
                } else {
                    do throws(Errno) { streaming = try FileSystem.names(of: oldFD).isEmpty } catch {
                        throw LayerError(.input, layer: oldPath, "cannot read directory: \(error.description)")
                    }
                }
            }
            if oldFD < 0, let lowerRoot {
                // An upper dir's root is the merged root: a chmod, chown or xattr change of the
                // container's `/` lives there, and the layer must say it.
                try TreeComparer.compareUpperRoot(lowerRoot: lowerRoot, changes: changes)
            }
            if streaming {
                if oldFD >= 0 { try TreeComparer.compareRoots(oldFD: oldFD, changes: changes) }
            } else if oldFD >= 0 {
                try TreeComparer(oldFD: oldFD, changes: changes, compareContents: options.compareContents).run()
            } else {
                // Every name in an upper dir is a change, so every hardlink group is complete already.
                try StreamingWalker.upper(rootFD: newFD, rootPath: changes.newRootPath,
                                          emit: { (item) throws(LayerError) in try changes.add(item) }, warn: changes.warn)
            }
        } catch {
            throw error.inLayer(newPath)
        }

        // 2. Write them: tar here, compression on the other thread(s).
        let pipe = ChunkPipe(chunkSize: 1 << 20, capacity: 8)
        // Uncompressed, the blob is the tar: its digest is the diffID, hashed once.
        let output = CompressStage(pipe: pipe, sink: BlobSink(fd: outputFD, hashing: options.compression != .none),
                                   compressor: try options.makeCompressor())
        output.start()
        var entries = 0
        var warnings = changes.warnings
        var diffID: Digest?
        var tarSize: Int64 = 0
        var failure: LayerError?
        do throws(LayerError) {
            let sink = TarSink(pipe: pipe)
            let emitter = EntryEmitter(sink: sink, rootFD: newFD, rootPath: changes.newRootPath, options: options, cancellation: cancellation)
            if streaming {
                if let root = changes.rootItem {
                    try emitter.emit(root)
                    entries += 1
                }
                let emit: StreamingWalker.Emit = { (item) throws(LayerError) in
                    try emitter.emit(item)
                    entries += 1
                }
                if oldFD >= 0 {
                    try StreamingWalker.fullTree(rootFD: newFD, rootPath: changes.newRootPath, emit: emit) { warnings.append($0) }
                } else {
                    try StreamingWalker.upper(rootFD: newFD, rootPath: changes.newRootPath, emit: emit) { warnings.append($0) }
                }
            } else {
                for item in changes.ordered() {
                    try emitter.emit(item)
                    entries += 1
                }
            }
            warnings += emitter.warnings
            try sink.finish()
            tarSize = sink.total
            pipe.finish(nil)
        } catch {
            failure = error
            pipe.close()
            pipe.finish(error)
        }
        output.wait()
        if let e = output.error { throw e.inLayer(newPath) }
        if let failure { throw failure.inLayer(newPath) }
        // Every chunk has been taken (the output stage is done): the shared digest is complete.
        diffID = try pipe.sharedDigest()
        let blobDigest = options.compression == .none ? diffID! : output.sink.hasher.finalize()
        for warning in warnings { options.logger.warning("\(warning)", metadata: ["layer": "\(newPath)"]) }
        let descriptor = Descriptor(mediaType: options.mediaType, digest: blobDigest, size: output.sink.size)
        return DiffResult(descriptor: descriptor, diffID: diffID!, tarSize: tarSize, entryCount: entries, warnings: warnings)
    }
}
