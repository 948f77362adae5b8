import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Importing images, layer by layer.
extension LayerStore {
    /// Called before each layer with its position (0 = bottom), the layer count and its chainID.
    /// It may be called from a thread of the store's own.
    public typealias ImportProgress = @Sendable (_ index: Int, _ count: Int, _ chainID: Digest) -> Void

    /// Imports the image `reference` of `layout` as `name` (default: the reference, or the
    /// layout's tag for it, or `latest`). See `importImage(_:name:progress:)`.
    @discardableResult
    public func importImage(layout: OCIImageLayout, reference: String?, name: String? = nil,
                            progress: ImportProgress? = nil) throws(StoreError) -> ImportResult {
        try importImage(layout: layout, reference: reference, name: name, progress: progress, cancellation: nil)
    }

    /// Imports an image from an OCI layout off the caller's thread. Cancelling the calling Task
    /// stops it between chunks and entries; what was under way is removed, layers already
    /// recorded stay (complete; gc removes them if no image names them).
    @discardableResult
    public func importImage(layout: OCIImageLayout, reference: String?, name: String? = nil,
                            progress: ImportProgress? = nil) async throws(StoreError) -> ImportResult {
        try await BlockingWork.run("layerkit-import") { (cancellation) throws(StoreError) -> ImportResult in
            try self.importImage(layout: layout, reference: reference, name: name, progress: progress, cancellation: cancellation)
        }
    }

    func importImage(layout: OCIImageLayout, reference: String?, name: String?, progress: ImportProgress?,
                     cancellation: CancellationFlag?) throws(StoreError) -> ImportResult {
        let resolved: ResolvedImage
        do { resolved = try layout.resolve(reference) } catch { throw StoreError(error) }
        return try importImage(resolved, name: name ?? reference ?? resolved.reference ?? "latest", progress: progress,
                               cancellation: cancellation)
    }

    /// Imports a resolved image (from an OCI layout, or any other source of its manifest, config
    /// and layer blobs) as `name`.
    ///
    /// Layers are taken bottom up. One the store has (same chainID) is not unpacked again. Any
    /// other is unpacked into `ROOT/staging/<random>/diff` in overlay format on top of the layers
    /// below, checking its blob digest, size and diffID, while the same bytes are written into the
    /// content dir (one read of the blob); then the file system is synced, the staging dir renamed
    /// to `ROOT/layers/<chainID hex>`, its short link made, and its record committed, in that
    /// order, under the layer's lock (a second process importing it waits, then finds it). The
    /// image record (name → top chainID, manifest and config digests) comes last, replacing any
    /// image of that name.
    ///
    /// On failure, layers already recorded stay (complete, unreferenced until an import names
    /// them: gc removes them) and nothing else is left behind.
    @discardableResult
    public func importImage(_ image: ResolvedImage, name: String, progress: ImportProgress? = nil) throws(StoreError) -> ImportResult {
        try importImage(image, name: name, progress: progress, cancellation: nil)
    }

    func importImage(_ resolved: ResolvedImage, name imageName: String, progress: ImportProgress?,
                     cancellation: CancellationFlag?) throws(StoreError) -> ImportResult {
        try Self.validateName(imageName)
        guard Digest.sha256(of: resolved.manifestBytes) == resolved.manifestDescriptor.digest,
              Digest.sha256(of: resolved.configBytes) == resolved.manifest.config.digest else {
            throw StoreError(.invalidArgument, "the image's manifest or config does not match its digest")
        }
        return try withStoreLock(.shared) { () throws(StoreError) -> ImportResult in
            let chain = resolved.chainIDs
            var imported = [ImportedLayer]()
            for (i, layer) in resolved.layers.enumerated() {
                if cancellation?.isCancelled == true { throw StoreError.cancelled }
                progress?(i, chain.count, chain[i])
                imported.append(try importLayer(layer, chainID: chain[i], parent: i > 0 ? chain[i - 1] : nil,
                                                lowerDirs: chain[..<i].reversed().map(paths.diffDir),
                                                name: layer.source.displayName, cancellation: cancellation))
            }
            // The config and manifest, so the image can be exported as it came (the layers' blobs
            // are in already: the manifest names them).
            try storeBlob(bytes: resolved.configBytes)
            try storeBlob(bytes: resolved.manifestBytes)
            FaultInjection.point("import.blobs")
            try recordImage(imageName, manifest: resolved.manifestDescriptor.digest, config: resolved.manifest.config.digest,
                            top: chain.last)
            guard let image = try image(named: imageName) else {
                throw StoreError(.notFound, path: paths.database, "image \(imageName.debugDescription) vanished after it was recorded")
            }
            return ImportResult(image: image, layers: imported)
        }
    }

    /// Writes an image record, replacing any of that name.
    func recordImage(_ name: String, manifest: Digest, config: Digest, top: Digest?) throws(StoreError) {
        try execute("""
            INSERT INTO images (name, manifest_digest, config_digest, top_chain_id, created) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                config_digest = excluded.config_digest, top_chain_id = excluded.top_chain_id, created = excluded.created
            """, [name, manifest, config, top, Self.now()])
    }

    /// Imports an image from a `docker save` tarball (see `DockerArchive`), extracted into the
    /// store's staging area for the import and removed after. The name defaults to the archive's
    /// first tag (`busybox:latest`), else to `reference`.
    @discardableResult
    public func importArchive(_ archive: String, reference: String?, name: String? = nil,
                              progress: ImportProgress? = nil) throws(StoreError) -> ImportResult {
        try importArchive(archive, reference: reference, name: name, progress: progress, cancellation: nil)
    }

    /// `importArchive` off the caller's thread, cancellable.
    @discardableResult
    public func importArchive(_ archive: String, reference: String?, name: String? = nil,
                              progress: ImportProgress? = nil) async throws(StoreError) -> ImportResult {
        try await BlockingWork.run("layerkit-import") { (cancellation) throws(StoreError) -> ImportResult in
            try self.importArchive(archive, reference: reference, name: name, progress: progress, cancellation: cancellation)
        }
    }

    func importArchive(_ archive: String, reference: String?, name: String?, progress: ImportProgress?,
                       cancellation: CancellationFlag?) throws(StoreError) -> ImportResult {
        // Held for the whole import, so gc cannot clean the staging dir meanwhile.
        try withStoreLock(.shared) { () throws(StoreError) -> ImportResult in
            let staging = try makeStagingDirectory()
            defer { try? Self.removeTree(staging) }
            let extracted: DockerArchive.Extracted
            do throws(ImageError) { extracted = try DockerArchive.extract(archive, into: staging + "/archive", reference: reference) } catch {
                throw StoreError(error)
            }
            return try importImage(layout: extracted.layout, reference: extracted.reference,
                                   name: name ?? extracted.tag, progress: progress, cancellation: cancellation)
        }
    }

    /// Makes sure one layer is in the store; the caller holds the store lock shared.
    func importLayer(_ layer: ImageLayer, chainID: Digest, parent: Digest?, lowerDirs: [String],
                     name: String, cancellation: CancellationFlag?) throws(StoreError) -> ImportedLayer {
        let lock = try FileLock(path: paths.layerLock(chainID))
        try lock.lock(.exclusive)
        defer { lock.unlock() }

        let existing = try self.layer(chainID)
        if let existing, Self.isDirectory(paths.diffDir(chainID)) {
            // Its blob too, for a later export (a store made before blobs were kept lacks it).
            try storeBlob(from: layer.source, layer.descriptor)
            return ImportedLayer(chainID: chainID, diffID: layer.diffID, blobDigest: layer.descriptor.digest,
                                 unpacked: false, size: existing.size)
        }
        // No record: a dir here was renamed in by a process that died before recording it.
        // A record without its dir (removed by hand): unpack again under the same short name.
        let layerDir = paths.layerDir(chainID)
        if access(layerDir, F_OK) == 0 { try Self.removeTree(layerDir) }
        let link = existing?.link ?? ShortLink.generate()

        let staging = try makeStagingDirectory()
        var renamed = false
        defer { if !renamed { try? Self.removeTree(staging) } }
        let diff = staging + "/diff"
        let diffFD = try Self.makeStagedDiff(diff, below: lowerDirs.first)
        defer { close(diffFD) }

        // The blob is written into the content dir from the very bytes the unpack reads and hashes.
        let blob: PendingBlob? = hasBlob(layer.descriptor.digest) ? nil : try PendingBlob(in: paths.blobsDir, for: layer.descriptor.digest)
        let summary: LayerSummary
        do throws(LayerError) {
            summary = try LayerApplier(options: layerApplyOptions(lowerDirs: lowerDirs))
                .apply(layer.source, rootFD: diffFD, name: name, expecting: LayerExpectation(layer.descriptor, diffID: layer.diffID),
                       copyingBlobTo: blob?.fd, cancellation: cancellation)
        } catch {
            throw StoreError(error)
        }
        FaultInjection.point("import.unpacked")
        let size = try Self.stagedLayerSize(summary, diff: diff)
        try installStagedLayer(staging, chainID: chainID, link: link, existing: existing != nil, diffID: layer.diffID,
                               descriptor: layer.descriptor, parent: parent, size: size, blob: blob)
        renamed = true
        return ImportedLayer(chainID: chainID, diffID: layer.diffID, blobDigest: layer.descriptor.digest, unpacked: true, size: size)
    }

    /// Puts a complete layer dir into the store: `staging/diff` holds the layer, `blob` (if any)
    /// its blob. Syncs the file system, commits the blob, renames the staging dir to
    /// `layers/<chainID>`, makes the short link and records the layer, in that order. The caller
    /// holds the layer's lock; on failure the layer dir is taken back out (the staging dir, once
    /// renamed, is the caller's no more).
    func installStagedLayer(_ staging: String, chainID: Digest, link: String, existing: Bool, diffID: Digest,
                            descriptor: Descriptor, parent: Digest?, size: Int64, blob: PendingBlob?) throws(StoreError) {
        let layerDir = paths.layerDir(chainID)
        try Self.writeFile(staging + "/link", link)
        // One syncfs makes the layer's files and its blob durable.
        try Durability.syncFileSystem(containing: staging)
        try blob?.commit(as: descriptor.digest, sync: false)
        FaultInjection.point("import.synced")

        try Self.renameStagedLayer(staging, to: layerDir)
        var recorded = false
        defer {
            // The record failed: take the dir back out rather than leave it for the next cleanup.
            if !recorded {
                unlink(paths.shortLink(link))
                try? Self.removeTree(layerDir)
            }
        }
        try Durability.syncDirectory(paths.layersDir)
        try Durability.syncDirectory(paths.blobsDir)
        FaultInjection.point("import.renamed")

        let linkPath = paths.shortLink(link)
        unlink(linkPath)
        guard symlink(StorePaths.shortLinkTarget(chainID), linkPath) == 0 else { throw .lastErrno(path: linkPath, "cannot create link") }
        try Durability.syncDirectory(paths.linksDir)
        FaultInjection.point("import.linked")

        try recordLayer(chainID, diffID: diffID, descriptor: descriptor, parent: parent, link: link, size: size, existing: existing)
        recorded = true
        FaultInjection.point("import.recorded")
    }

    static func writeFile(_ path: String, _ text: String) throws(StoreError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot create") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw .lastErrno(path: path, "cannot write") }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }
}
