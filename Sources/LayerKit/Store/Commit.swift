import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `LayerStore.commit` made.
public struct CommitResult: Sendable, Codable, Equatable {
    /// The new image record.
    public var image: StoredImage
    /// The new layer's blob (in the store's content dir) and diffID.
    public var layer: DiffResult
    /// The new layer's chainID.
    public var chainID: Digest
    /// False when the store already had a layer with that chainID (nothing was unpacked).
    public var unpacked: Bool
    /// The new image manifest.
    public var manifest: Descriptor
    /// How the layer dir was made: copied from the upper dir while the blob was written, or (an
    /// aufs-form upper) unpacked from the blob.
    public var layerDir: CommittedLayerDir
}

/// How a commit made its layer dir.
public enum CommittedLayerDir: String, Sendable, Codable {
    /// Copied from the container's upper dir (in the store's overlay format) while the blob was
    /// written: the blob is never read back.
    case copiedFromUpperDir
    /// Unpacked from the blob, as an import would (an upper in the aufs form).
    case unpackedFromBlob
    /// The store had a layer with that chainID already.
    case alreadyPresent
}

/// Committing a container's changes as a new layer and image.
extension LayerStore {
    /// Turns a container's upper dir into a layer on top of its image and records a new image
    /// `name` (replacing an image of that name).
    ///
    /// The upper dir is diffed (overlay whiteouts and opaque dirs, or the aufs form, become OCI
    /// whiteouts) into a blob in the content dir with both digests computed in the same pass; the
    /// blob is unpacked as a store layer like any imported one (skipped if that chainID exists);
    /// the image's config gets the new diffID and a history entry, its manifest the new layer (an
    /// OCI manifest, whatever the base image's was); both are written as blobs; the image record
    /// comes last. The container may stay mounted: its mount is synced first (the FUSE driver's
    /// writeback cache), then its upper dir is only read (changes made during the commit may or
    /// may not be in the layer).
    public func commit(container id: String, as name: String, compression: Compression = .gzip, level: Int? = nil,
                       comment: String? = nil) throws(StoreError) -> CommitResult {
        try commit(container: id, as: name, compression: compression, level: level, comment: comment, cancellation: nil)
    }

    /// `commit` off the caller's thread; cancelling the calling Task stops it, leaving nothing.
    public func commit(container id: String, as name: String, compression: Compression = .gzip, level: Int? = nil,
                       comment: String? = nil) async throws(StoreError) -> CommitResult {
        try await BlockingWork.run("layerkit-commit") { (cancellation) throws(StoreError) -> CommitResult in
            try self.commit(container: id, as: name, compression: compression, level: level, comment: comment, cancellation: cancellation)
        }
    }

    func commit(container id: String, as name: String, compression: Compression, level: Int?, comment: String?,
                cancellation: CancellationFlag?) throws(StoreError) -> CommitResult {
        try Self.validateName(name)
        return try withStoreLock(.shared) { () throws(StoreError) -> CommitResult in
            try commitLocked(container: id, as: name, compression: compression, level: level, comment: comment, cancellation: cancellation)
        }
    }

    private func commitLocked(container id: String, as name: String, compression: Compression, level: Int?, comment: String?,
                              cancellation: CancellationFlag?) throws(StoreError) -> CommitResult {
        guard let container = try container(id) else { throw StoreError(.notFound, "no container \(id.debugDescription)") }
        guard !container.readOnly else { throw StoreError(.invalidArgument, "container \(container.id) is read-only: it has no changes to commit") }

        let byChain = Dictionary(uniqueKeysWithValues: try layers().map { ($0.chainID, $0) })
        let chain = try Self.chain(of: container.chainID, in: byChain, path: paths.database)
        let baseLayers = chain.map { byChain[$0]! }
        try flushChanges(of: container.id)

        // 1. The layer blob, written into the content dir under a temporary name (renamed to its
        // digest once known; a crash leaves a temporary file gc removes). Meanwhile, on the other
        // core, the upper dir (already in the store's overlay format) is copied into a staging dir
        // as the layer dir: nothing is decompressed or applied again.
        let upper = upperDir(of: container.id)
        let staging = try makeStagingDirectory()
        var stagingKept = false
        defer { if !stagingKept { try? Self.removeTree(staging) } }
        let copy = try UpperCopy(upper: upper, into: staging + "/diff", namespace: overlayNamespace)
        copy.start()
        let blob = try PendingBlob(in: paths.blobsDir, for: nil)
        var options = DiffOptions(compression: compression, level: level)
        options.logger = configuration.logger
        let diff: DiffResult
        do throws(LayerError) {
            diff = try LayerDiffer(options: options).write(.upper(upper, lowerRoot: chain.last.map(paths.diffDir)),
                                                          to: blob.fd, cancellation: cancellation)
        } catch {
            copy.wait()
            throw StoreError(error)
        }
        let copied = copy.wait()
        try blob.commit(as: diff.descriptor.digest, sync: true)
        let chainID = ChainID.chain(baseLayers.map(\.diffID) + [diff.diffID]).last!
        FaultInjection.point("commit.diffed")

        // 2. The layer itself: the copy, installed as an import installs an unpacked layer. An
        // aufs-form upper (the FUSE union where 0/0 devices cannot be made) is not a layer dir as
        // it is: that layer is unpacked from the blob just written, as an import would.
        let imported: ImportedLayer
        let made: CommittedLayerDir
        if let size = copied {
            imported = try installCommittedLayer(staging: staging, chainID: chainID, parent: container.chainID, diff: diff, size: size)
            stagingKept = imported.unpacked
            made = imported.unpacked ? .copiedFromUpperDir : .alreadyPresent
        } else {
            let layerSource = LayerSource.path(paths.blob(diff.descriptor.digest))
            imported = try importLayer(ImageLayer(descriptor: diff.descriptor, diffID: diff.diffID, source: layerSource),
                                       chainID: chainID, parent: container.chainID,
                                       lowerDirs: chain.reversed().map(paths.diffDir), name: "container \(container.id)",
                                       cancellation: cancellation)
            made = imported.unpacked ? .unpackedFromBlob : .alreadyPresent
        }

        // 3. Config and manifest, from the base image's where the store has them.
        var base: StoredImage? = nil
        if let name = container.image, let found = try image(named: name), found.topChainID == container.chainID { base = found }
        var config = try base.map { (image) throws(StoreError) -> ImageConfig in try document(ImageConfig.self, image.configDigest) }
            ?? Self.minimalConfig()
        config.rootfs = ImageConfig.RootFS(diffIDs: baseLayers.map(\.diffID) + [diff.diffID])
        let created = Self.timestamp()
        config.created = created
        config.history = (config.history ?? []) + [ImageConfig.History(created: created, createdBy: "layertool commit \(container.id)", comment: comment)]
        let configBytes = CanonicalJSON.encode(config)
        let configDigest = try storeBlob(bytes: configBytes)

        var layerDescriptors: [Descriptor]
        var annotations: [String: String]? = nil
        if let base {
            let baseManifest = try document(ImageManifest.self, base.manifestDigest)
            layerDescriptors = baseManifest.layers
            annotations = baseManifest.annotations
        } else {
            layerDescriptors = try baseLayers.map { (layer) throws(StoreError) -> Descriptor in try Self.descriptor(for: layer) }
        }
        // An OCI manifest, so the layer types of a Docker base are given their OCI names.
        layerDescriptors = layerDescriptors.map { var d = $0; d.mediaType = MediaType.ociEquivalent(ofLayer: d.mediaType); return d }
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                     layers: layerDescriptors + [diff.descriptor], annotations: annotations)
        let manifestBytes = CanonicalJSON.encode(manifest)
        let manifestDigest = try storeBlob(bytes: manifestBytes)
        FaultInjection.point("commit.blobs")

        try recordImage(name, manifest: manifestDigest, config: configDigest, top: chainID)
        guard let image = try image(named: name) else { throw StoreError(.notFound, "image \(name) vanished after it was recorded") }
        return CommitResult(image: image, layer: diff, chainID: chainID, unpacked: imported.unpacked,
                            manifest: Descriptor(mediaType: MediaType.ociManifest, digest: manifestDigest, size: Int64(manifestBytes.count)),
                            layerDir: made)
    }

    /// Records the layer copied from an upper dir, unless the store has that chainID already.
    private func installCommittedLayer(staging: String, chainID: Digest, parent: Digest?, diff: DiffResult,
                                       size: Int64) throws(StoreError) -> ImportedLayer {
        let lock = try FileLock(path: paths.layerLock(chainID))
        try lock.lock(.exclusive)
        defer { lock.unlock() }
        let existing = try layer(chainID)
        if let existing, Self.isDirectory(paths.diffDir(chainID)) {
            return ImportedLayer(chainID: chainID, diffID: diff.diffID, blobDigest: diff.descriptor.digest, unpacked: false, size: existing.size)
        }
        let layerDir = paths.layerDir(chainID)
        if access(layerDir, F_OK) == 0 { try Self.removeTree(layerDir) }
        try installStagedLayer(staging, chainID: chainID, link: existing?.link ?? ShortLink.generate(), existing: existing != nil,
                               diffID: diff.diffID, descriptor: diff.descriptor, parent: parent, size: size, blob: nil)
        return ImportedLayer(chainID: chainID, diffID: diff.diffID, blobDigest: diff.descriptor.digest, unpacked: true, size: size)
    }

    // MARK: Documents

    /// A manifest or config of the content dir, decoded.
    func document<T: Decodable>(_ type: T.Type, _ digest: Digest) throws(StoreError) -> T {
        let bytes = try readBlob(digest)
        do throws(CanonicalJSON.DocumentError) { return try CanonicalJSON.decode(type, from: bytes) } catch {
            throw StoreError(.incompatible, path: paths.blob(digest), "not a valid \(T.self): \(error.reason)")
        }
    }

    /// A config for an image made from layers alone: the platform this runs on.
    static func minimalConfig() -> ImageConfig {
        let host = Platform.host
        var config = ImageConfig(architecture: host.architecture, os: host.os, variant: host.variant,
                                 config: ImageConfig.ExecutionConfig(), rootfs: ImageConfig.RootFS(diffIDs: []))
        config.history = []
        return config
    }

    static func descriptor(for layer: StoredLayer) throws(StoreError) -> Descriptor {
        guard let digest = layer.blobDigest, let size = layer.blobSize else {
            throw StoreError(.incompatible, "layer \(layer.chainID) has no blob record: it cannot be listed in a manifest")
        }
        return Descriptor(mediaType: layer.mediaType ?? MediaType.ociLayer(.gzip), digest: digest, size: size)
    }

    /// RFC 3339 UTC, as OCI configs write times.
    static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date())
    }

    /// `ROOT/staging/<random>`, 0700.
    func makeStagingDirectory() throws(StoreError) -> String {
        var template = Array("\(paths.stagingDir)/XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw .lastErrno(path: paths.stagingDir, "cannot create a staging directory") }
        return String(cString: made)
    }
}
