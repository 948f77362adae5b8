import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What importing an `IncomingImage` needs of one of its layers.
public enum LayerNeed: String, Sendable, Codable, Equatable {
    /// The store has the layer and its blob: nothing is read.
    case present
    /// The store has the layer (same chainID) but not this blob: the blob is read into the
    /// content dir, so the image exports and pushes byte for byte, and not unpacked.
    case blobOnly = "blob-only"
    /// The store lacks the layer: its blob is unpacked, and kept.
    case unpack
}

extension LayerStore {
    /// What importing `image` needs of each of its layers, bottom first, as the store is now. No
    /// lock is taken: another import may add a layer meanwhile (`StreamingImport` tolerates that).
    public func layerNeeds(of image: IncomingImage) throws(StoreError) -> [LayerNeed] {
        var needs = [LayerNeed]()
        for layer in image.layers {
            if try self.layer(layer.chainID) != nil, Self.isDirectory(paths.diffDir(layer.chainID)) {
                needs.append(hasBlob(layer.descriptor.digest) ? .present : .blobOnly)
            } else {
                needs.append(.unpack)
            }
        }
        return needs
    }

    /// Begins importing `image` as `name` while its layer blobs are still to come (a registry
    /// pull): asks which layers the store lacks and gives a `LayerStream` for each blob it needs.
    ///
    /// The caller writes each stream (downloads, several at once if it likes) while
    /// `StreamingImport.run` reads them, bottom layer first: each needed blob goes straight into
    /// the unpack pipeline (blob digest, inflate, diffID, apply into a staging dir) and, in the
    /// same pass, into its file in the content dir. Layers the store has are not read at all.
    ///
    /// The session holds the store lock shared from now until `run` returns or `cancel()`, so
    /// garbage collection waits and no layer found present goes away meanwhile. Later layers'
    /// streams spool into the session's staging dir (unlinked files) until their turn.
    public func beginImport(_ image: IncomingImage, name: String, memoryLimit: Int = 4 << 20) async throws(StoreError) -> StreamingImport {
        try Self.validateName(name)
        return try await BlockingWork.run("layerkit-import") { (cancellation) throws(StoreError) -> StreamingImport in
            let lock = try FileLock(path: self.paths.storeLock)
            try Self.wait(for: lock, .shared, cancellation: cancellation)
            var locked = true
            defer { if locked { lock.unlock() } }
            let staging = try self.makeStagingDirectory()
            var made = false
            defer { if !made { try? Self.removeTree(staging) } }
            let needs = try self.layerNeeds(of: image)
            let streams = zip(image.layers, needs).map { layer, need in
                need == .present ? nil : LayerStream(size: layer.descriptor.size, spoolDirectory: staging, memoryLimit: memoryLimit)
            }
            let session = StreamingImport(store: self, image: image, name: name, needs: needs, streams: streams,
                                          stagingDir: staging, storeLock: lock)
            made = true
            locked = false
            return session
        }
    }

    /// Takes `lock`, checking `cancellation` while another process holds it.
    static func wait(for lock: FileLock, _ mode: FileLock.Mode, cancellation: CancellationFlag?) throws(StoreError) {
        while try !lock.tryLock(mode) {
            if cancellation?.isCancelled == true { throw StoreError.cancelled }
            usleep(20_000)
        }
    }
}

/// An import in progress of an image whose layer blobs arrive as streams: made by
/// `LayerStore.beginImport(_:name:)`, completed by `run(progress:)`.
///
/// **All or nothing.** Every needed layer is unpacked into the session's staging dir (on top of
/// the layers below, staged or stored) and its blob written beside it, each checked against its
/// digest, size and diffID as it is read. Only when every layer is in are they committed
/// together: one `syncfs`, the blobs and layer dirs renamed into place, then the layers and the
/// image recorded in one transaction. A failure of any kind — a digest or diffID mismatch, a
/// writer's `fail`, a cancellation — leaves no layer record, no blob, no image record and no
/// staging dir. A crash (`kill -9`) at any point leaves what the store's next idle open removes:
/// the staging dir, layer dirs and links without records, and (through the session's journal)
/// blobs committed for records that were never written.
///
/// **Tolerant.** A layer another import adds between `beginImport` and the moment `run` takes
/// that layer's lock is not read again: its stream is dismissed (`LayerStream.dismiss()`), which
/// tells the writer to stop (its writes throw `.notNeeded`).
public final class StreamingImport: @unchecked Sendable {
    /// What happens during `run`, for progress displays (called from the import's thread).
    public enum Event: Sendable {
        /// Layer `layer` is being read from its stream (unpacked, or its blob stored).
        case reading(layer: Int)
        /// Layer `layer` was unpacked and verified (in staging until the commit).
        case unpacked(layer: Int, LayerSummary)
        /// Layer `layer`'s blob was stored (the store has the layer itself).
        case blobStored(layer: Int)
        /// Layer `layer` was added by another import meanwhile: its stream was dismissed.
        case dismissed(layer: Int)
        /// Every layer is in: the commit begins.
        case committing
    }

    /// Called with each `Event`.
    public typealias Progress = @Sendable (Event) -> Void

    /// The image being imported.
    public let image: IncomingImage
    /// The name it is recorded under.
    public let name: String
    /// What the store needed of each layer when the import began, bottom first.
    public let needs: [LayerNeed]
    /// Per layer, bottom first: the stream to write its blob into; nil for a layer the store
    /// has with its blob (not to be read at all).
    public let streams: [LayerStream?]

    private let store: LayerStore
    private let stagingDir: String
    private let lock = NSLock()
    private var storeLock: FileLock?
    private var started = false

    init(store: LayerStore, image: IncomingImage, name: String, needs: [LayerNeed], streams: [LayerStream?],
         stagingDir: String, storeLock: FileLock) {
        self.store = store
        self.image = image
        self.name = name
        self.needs = needs
        self.streams = streams
        self.stagingDir = stagingDir
        self.storeLock = storeLock
    }

    deinit { finishSession(cancelled: false) }

    /// The indexes of the layers whose blobs are to be written into `streams`.
    public var neededLayers: [Int] { streams.indices.filter { streams[$0] != nil } }

    /// Reads the streams, bottom layer first, unpacking each layer the store lacks and storing
    /// each blob it lacks, then commits everything at once (see the type's description).
    /// Cancelling the calling Task stops it (streams fail their writers with `.cancelled`) and
    /// commits nothing. Call it once.
    public func run(progress: Progress? = nil) async throws(StoreError) -> StreamingImportResult {
        let first: Bool = lock.withLock {
            defer { started = true }
            return !started && storeLock != nil
        }
        guard first else { throw StoreError(.invalidArgument, "this import was already run or cancelled") }
        let streams = self.streams
        let result: Result<StreamingImportResult, StoreError> = await withTaskCancellationHandler {
            do throws(StoreError) {
                return .success(try await BlockingWork.run("layerkit-import") { (cancellation) throws(StoreError) -> StreamingImportResult in
                    try self.importLocked(progress: progress, cancellation: cancellation)
                })
            } catch {
                return .failure(error)
            }
        } onCancel: {
            for stream in streams { stream?.close(cancelled: true) }
        }
        finishSession(cancelled: false)
        return try result.get()
    }

    /// Abandons the import before `run` (or stops a running one, like cancelling its Task): the
    /// streams' writers are told to stop, the staging dir is removed and the store lock released
    /// once `run` is over.
    public func cancel() {
        let running: Bool = lock.withLock { started && storeLock != nil }
        if running {
            for stream in streams { stream?.close(cancelled: true) }
        } else {
            finishSession(cancelled: true)
        }
    }

    /// Stops the streams not read, removes the staging dir, releases the store lock; once.
    private func finishSession(cancelled: Bool) {
        let held: FileLock? = lock.withLock {
            defer { storeLock = nil; started = true }
            return storeLock
        }
        guard let held else { return }
        for stream in streams { stream?.close(cancelled: cancelled) }
        try? LayerStore.removeTree(stagingDir)
        held.unlock()
    }

    // MARK: The import, on its own thread

    /// A layer staged for the commit.
    private struct Staged {
        var index: Int
        var directory: String
        var link: String
        var recordExists: Bool
        var size: Int64
    }

    private func importLocked(progress: Progress?, cancellation: CancellationFlag) throws(StoreError) -> StreamingImportResult {
        let paths = store.paths
        var layerLocks = [FileLock]()
        defer { for held in layerLocks { held.unlock() } }
        var staged = [Staged]()
        var blobs = [StagedBlob]()
        var lowerDirs = [String]()
        var outcomes = [StreamingImportResult.Layer]()

        for (i, layer) in image.layers.enumerated() {
            if cancellation.isCancelled { throw StoreError.cancelled }
            let chainID = layer.chainID
            guard let stream = streams[i] else {
                lowerDirs.append(paths.diffDir(chainID))
                outcomes.append(.init(layer, outcome: .present, size: try store.layer(chainID)?.size ?? 0))
                continue
            }
            let layerLock = try FileLock(path: paths.layerLock(chainID))
            try LayerStore.wait(for: layerLock, .exclusive, cancellation: cancellation)
            layerLocks.append(layerLock)
            let existing = try store.layer(chainID)
            let name = "\(image.source)@\(layer.descriptor.digest)"

            if let existing, LayerStore.isDirectory(paths.diffDir(chainID)) {
                lowerDirs.append(paths.diffDir(chainID))
                if store.hasBlob(layer.descriptor.digest) || blobs.contains(where: { $0.digest == layer.descriptor.digest }) {
                    stream.dismiss()
                    progress?(.dismissed(layer: i))
                    outcomes.append(.init(layer, outcome: .appeared, size: existing.size))
                } else {
                    progress?(.reading(layer: i))
                    blobs.append(try storeBlobOnly(stream, layer.descriptor, name: name, index: i))
                    progress?(.blobStored(layer: i))
                    outcomes.append(.init(layer, outcome: .blobAdded, size: existing.size))
                }
                continue
            }
            // No record: a dir here was renamed in by a process that died before recording it.
            // A record without its dir (removed by hand): unpacked again under the same short name.
            if access(paths.layerDir(chainID), F_OK) == 0 { try LayerStore.removeTree(paths.layerDir(chainID)) }
            progress?(.reading(layer: i))
            let directory = stagingDir + "/layer-\(i)"
            let diff = directory + "/diff"
            guard mkdir(directory, 0o700) == 0 else { throw .lastErrno(path: directory, "cannot create directory") }
            let diffFD = try LayerStore.makeStagedDiff(diff, below: lowerDirs.last)
            defer { close(diffFD) }
            // The blob is written from the very bytes the unpack reads and hashes.
            let needsBlob = !store.hasBlob(layer.descriptor.digest) && !blobs.contains { $0.digest == layer.descriptor.digest }
            let blob = needsBlob ? try StagedBlob(in: stagingDir, digest: layer.descriptor.digest) : nil
            let summary: LayerSummary
            do throws(LayerError) {
                summary = try LayerApplier(options: store.layerApplyOptions(lowerDirs: lowerDirs.reversed())).apply(.stream(stream), rootFD: diffFD, name: name,
                                                                     expecting: LayerExpectation(layer.descriptor, diffID: layer.diffID),
                                                                     copyingBlobTo: blob?.fd, cancellation: cancellation)
            } catch {
                throw error.kind == .cancelled ? StoreError.cancelled : StoreError(error)
            }
            if let blob { blobs.append(blob) }
            let size = try LayerStore.stagedLayerSize(summary, diff: diff)
            staged.append(Staged(index: i, directory: directory, link: existing?.link ?? ShortLink.generate(),
                                 recordExists: existing != nil, size: size))
            lowerDirs.append(diff)
            progress?(.unpacked(layer: i, summary))
            outcomes.append(.init(layer, outcome: .unpacked, size: size))
        }
        if cancellation.isCancelled { throw StoreError.cancelled }
        FaultInjection.point("stream-import.unpacked")
        progress?(.committing)
        try commit(staged, blobs: blobs)
        guard let record = try store.image(named: name) else {
            throw StoreError(.notFound, path: paths.database, "image \(name.debugDescription) vanished after it was recorded")
        }
        return StreamingImportResult(image: record, layers: outcomes)
    }

    /// Reads a blob the store lacks for a layer it has: hashed and kept, not unpacked.
    private func storeBlobOnly(_ stream: LayerStream, _ descriptor: Descriptor, name: String, index: Int) throws(StoreError) -> StagedBlob {
        let blob = try StagedBlob(in: stagingDir, digest: descriptor.digest)
        var hasher = SHA256Hasher()
        var size: Int64 = 0
        do throws(LayerError) {
            try LayerPipeline.copyBlob(.stream(stream), limit: descriptor.size) { (bytes) throws(LayerError) in
                hasher.update(bytes)
                size += Int64(bytes.count)
                do throws(Errno) { try DataCopy.writeAll(blob.fd, bytes.baseAddress!, bytes.count, at: nil) } catch {
                    throw LayerError(.system(error), "cannot write blob: \(error.description)")
                }
            }
        } catch {
            throw error.kind == .cancelled ? StoreError.cancelled : StoreError(error.inLayer(name))
        }
        guard size == descriptor.size, hasher.finalize() == descriptor.digest else {
            throw StoreError(LayerError(.digestMismatch, layer: name, "digest mismatch: the blob does not match \(descriptor.digest)"))
        }
        return blob
    }

    /// Puts every staged layer and blob, the config and the manifest into the store and records
    /// them with the image, in one transaction (see the type's description for the order).
    private func commit(_ staged: [Staged], blobs layerBlobs: [StagedBlob]) throws(StoreError) {
        let paths = store.paths
        var blobs = layerBlobs
        for bytes in [image.configBytes, image.manifestBytes] {
            let digest = Digest.sha256(of: bytes)
            guard !store.hasBlob(digest), !blobs.contains(where: { $0.digest == digest }) else { continue }
            let blob = try StagedBlob(in: stagingDir, digest: digest)
            if !bytes.isEmpty {
                let failed: Errno? = bytes.withUnsafeBytes { raw in
                    do throws(Errno) {
                        try DataCopy.writeAll(blob.fd, raw.baseAddress!, raw.count, at: nil)
                        return nil
                    } catch {
                        return error
                    }
                }
                if let failed { throw .system(failed, path: blob.path, "cannot write blob") }
            }
            blobs.append(blob)
        }
        for layer in staged { try LayerStore.writeFile(layer.directory + "/link", layer.link) }
        // Which blobs this import adds, written down before any is: the next idle open of the
        // store removes those no record names if this process dies before its records are in.
        let added = blobs.filter { !store.hasBlob($0.digest) }
        try ImportJournal.write(added.map(\.digest), in: stagingDir)
        // One syncfs makes the layers' files, the blobs and the journal durable.
        try Durability.syncFileSystem(containing: stagingDir)
        FaultInjection.point("stream-import.synced")

        var recorded = false
        var renamed = [Staged]()
        var committed = [Digest]()
        defer {
            if !recorded {
                // Taken back out rather than left for the next cleanup.
                for layer in renamed {
                    unlink(paths.shortLink(layer.link))
                    try? LayerStore.removeTree(paths.layerDir(image.layers[layer.index].chainID))
                }
                if !committed.isEmpty, let live = try? store.referencedBlobs() {
                    for digest in committed where !live.contains(digest) { unlink(paths.blob(digest)) }
                }
            }
        }
        for blob in added {
            guard rename(blob.path, paths.blob(blob.digest)) == 0 else {
                throw .lastErrno(path: paths.blob(blob.digest), "cannot rename blob into place")
            }
            committed.append(blob.digest)
        }
        FaultInjection.point("stream-import.blobs")
        for layer in staged {
            try LayerStore.renameStagedLayer(layer.directory, to: paths.layerDir(image.layers[layer.index].chainID))
            renamed.append(layer)
        }
        try Durability.syncDirectory(paths.layersDir)
        try Durability.syncDirectory(paths.blobsDir)
        FaultInjection.point("stream-import.renamed")
        for layer in staged {
            let linkPath = paths.shortLink(layer.link)
            unlink(linkPath)
            guard symlink(StorePaths.shortLinkTarget(image.layers[layer.index].chainID), linkPath) == 0 else {
                throw .lastErrno(path: linkPath, "cannot create link")
            }
        }
        try Durability.syncDirectory(paths.linksDir)
        FaultInjection.point("stream-import.linked")

        try store.transaction { () throws(StoreError) in
            for layer in staged {
                let incoming = image.layers[layer.index]
                try store.recordLayer(incoming.chainID, diffID: incoming.diffID, descriptor: incoming.descriptor,
                                      parent: layer.index > 0 ? image.layers[layer.index - 1].chainID : nil,
                                      link: layer.link, size: layer.size, existing: layer.recordExists)
            }
            try store.recordImage(name, manifest: image.manifestDescriptor.digest, config: image.manifest.config.digest,
                                  top: image.chainID)
        }
        recorded = true
        FaultInjection.point("stream-import.recorded")
    }
}

/// What `StreamingImport.run` did.
public struct StreamingImportResult: Sendable, Equatable {
    /// How one layer got into the store.
    public enum Outcome: String, Sendable, Codable, Equatable {
        /// The store had it and its blob when the import began: nothing was read.
        case present
        /// Another import added it (and its blob) meanwhile: its stream was dismissed.
        case appeared
        /// Unpacked from its stream (its blob kept).
        case unpacked
        /// The store had the layer; its blob was read from the stream into the content dir.
        case blobAdded = "blob-added"
    }

    /// One layer.
    public struct Layer: Sendable, Codable, Equatable {
        /// Its chainID (its identity in the store).
        public var chainID: Digest
        /// sha256 of its uncompressed tar.
        public var diffID: Digest
        /// Its blob's digest and size.
        public var blobDigest: Digest
        public var blobSize: Int64
        /// How it got in.
        public var outcome: Outcome
        /// Bytes on disk of its diff dir.
        public var size: Int64

        init(_ layer: IncomingImage.Layer, outcome: Outcome, size: Int64) {
            chainID = layer.chainID
            diffID = layer.diffID
            blobDigest = layer.descriptor.digest
            blobSize = layer.descriptor.size
            self.outcome = outcome
            self.size = size
        }

        /// Whether its stream was read (unpacked, or its blob stored).
        public var wasRead: Bool { outcome == .unpacked || outcome == .blobAdded }
    }

    /// The image record as written.
    public var image: StoredImage
    /// Every layer, bottom first.
    public var layers: [Layer]
}

/// A blob being written into a session's staging dir, renamed into the content dir at the commit
/// (or removed with the staging dir).
final class StagedBlob {
    let fd: Int32
    let path: String
    let digest: Digest

    init(in directory: String, digest: Digest) throws(StoreError) {
        var template = Array("\(directory)/blob-\(digest.hex.prefix(12))-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw .lastErrno(path: directory, "cannot create blob") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        fchmod(fd, 0o644)
        self.fd = fd
        self.path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        self.digest = digest
    }

    deinit { close(fd) }
}
