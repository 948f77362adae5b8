import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Importing an image from an OCI layout, layer by layer.
extension LayerStore {
    /// Called before each layer with its position (0 = bottom), the layer count and its chainID.
    public typealias ImportProgress = (_ index: Int, _ count: Int, _ chainID: Digest) -> Void

    /// Imports the image `reference` of `layout` as `name` (default: the reference, or the
    /// layout's tag for it, or `latest`).
    ///
    /// Layers are taken bottom up. One the store has (same chainID) is not unpacked again. Any
    /// other is unpacked into `ROOT/staging/<random>/diff` in overlay format on top of the layers
    /// below, checking its blob digest and diffID; then the file system is synced, the staging dir
    /// renamed to `ROOT/layers/<chainID hex>`, its short link made, and its record committed, in
    /// that order, under the layer's lock (a second process importing it waits, then finds it).
    /// The image record (name → top chainID, manifest and config digests) comes last, replacing
    /// any image of that name.
    ///
    /// On failure, layers already recorded stay (complete, unreferenced until an import names
    /// them: gc removes them) and nothing else is left behind.
    @discardableResult
    public func importImage(layout: OCIImageLayout, reference: String?, name: String? = nil,
                            progress: ImportProgress? = nil) throws(StoreError) -> ImportResult {
        let resolved: ResolvedImage
        do { resolved = try layout.resolve(reference) } catch { throw StoreError(error) }
        let imageName = name ?? reference ?? resolved.reference ?? "latest"
        try Self.validateName(imageName)

        try storeLock.lock(.shared)
        defer { storeLock.unlock() }

        let chain = resolved.chainIDs
        var imported = [ImportedLayer]()
        for (i, layer) in resolved.layers.enumerated() {
            progress?(i, chain.count, chain[i])
            imported.append(try importLayer(layer, chainID: chain[i], parent: i > 0 ? chain[i - 1] : nil,
                                            lowerDirs: chain[..<i].reversed().map(paths.diffDir),
                                            name: "\(layout.path)@\(layer.descriptor.digest)"))
        }
        // The blobs, so the image can be exported as it came (layers first: the manifest names them).
        for layer in resolved.layers { try storeBlob(copying: layer.blobPath, digest: layer.descriptor.digest) }
        try storeBlob(copying: layout.blobPath(resolved.manifest.config.digest), digest: resolved.manifest.config.digest)
        try storeBlob(copying: layout.blobPath(resolved.manifestDescriptor.digest), digest: resolved.manifestDescriptor.digest)
        FaultInjection.point("import.blobs")
        try execute("""
            INSERT INTO images (name, manifest_digest, config_digest, top_chain_id, created) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                config_digest = excluded.config_digest, top_chain_id = excluded.top_chain_id, created = excluded.created
            """, [imageName, resolved.manifestDescriptor.digest, resolved.manifest.config.digest, chain.last, Self.now()])
        guard let image = try image(named: imageName) else {
            throw StoreError(.notFound, path: paths.database, "image \(imageName.debugDescription) vanished after it was recorded")
        }
        return ImportResult(image: image, layers: imported)
    }

    /// Imports an image from a `docker save` tarball (see `DockerArchive`), extracted into the
    /// store's staging area for the import and removed after. The name defaults to the archive's
    /// first tag (`busybox:latest`), else to `reference`.
    @discardableResult
    public func importArchive(_ archive: String, reference: String?, name: String? = nil,
                              progress: ImportProgress? = nil) throws(StoreError) -> ImportResult {
        // Held (on its own descriptor) for the whole import, so gc cannot clean the staging dir.
        let guardLock = try FileLock(path: paths.storeLock)
        try guardLock.lock(.shared)
        defer { guardLock.unlock() }
        let staging = try makeStagingDirectory()
        defer { try? Self.removeTree(staging) }
        let extracted: (layout: OCIImageLayout, reference: String?, tag: String?)
        do { extracted = try DockerArchive.extract(archive, into: staging + "/archive", reference: reference) } catch {
            throw StoreError(error)
        }
        return try importImage(layout: extracted.layout, reference: extracted.reference,
                               name: name ?? extracted.tag, progress: progress)
    }

    /// Makes sure one layer is in the store; the caller holds the store lock shared.
    func importLayer(_ layer: ImageLayer, chainID: Digest, parent: Digest?, lowerDirs: [String],
                             name: String) throws(StoreError) -> ImportedLayer {
        let lock = try FileLock(path: paths.layerLock(chainID))
        try lock.lock(.exclusive)
        defer { lock.unlock() }

        let existing = try self.layer(chainID)
        if let existing, Self.isDirectory(paths.diffDir(chainID)) {
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
        guard mkdir(diff, 0o755) == 0, chmod(diff, 0o755) == 0 else { throw .lastErrno(path: diff, "cannot create directory") }

        let applier = LayerApplier(options: ApplyOptions(format: .overlay(overlayNamespace), lowerDirs: lowerDirs))
        do {
            _ = try applier.apply(.path(layer.blobPath), to: diff, name: name,
                                  expecting: LayerExpectation(blobDigest: layer.descriptor.digest, diffID: layer.diffID))
        } catch {
            throw StoreError(error)
        }
        FaultInjection.point("import.unpacked")
        // The blob, just verified by the unpack, into the content dir; the syncfs below covers it.
        try storeBlob(copying: layer.blobPath, digest: layer.descriptor.digest, verified: true)
        let size = try DiskUsage.of(diff)
        try Self.writeFile(staging + "/link", link)
        try Durability.syncFileSystem(containing: staging)
        FaultInjection.point("import.synced")

        if lk_renameat2(AT_FDCWD, staging, AT_FDCWD, layerDir, UInt32(LK_RENAME_NOREPLACE)) != 0 {
            // File systems without RENAME_NOREPLACE: the target was checked absent under the lock.
            guard errno == EINVAL, rename(staging, layerDir) == 0 else {
                throw .lastErrno(path: layerDir, "cannot rename the staging dir \(staging) into place")
            }
        }
        renamed = true
        var recorded = false
        defer {
            // The record failed: take the dir back out rather than leave it for the next cleanup.
            if !recorded {
                unlink(paths.shortLink(link))
                try? Self.removeTree(layerDir)
            }
        }
        try Durability.syncDirectory(paths.layersDir)
        FaultInjection.point("import.renamed")

        let linkPath = paths.shortLink(link)
        unlink(linkPath)
        guard symlink(StorePaths.shortLinkTarget(chainID), linkPath) == 0 else { throw .lastErrno(path: linkPath, "cannot create link") }
        try Durability.syncDirectory(paths.linksDir)
        FaultInjection.point("import.linked")

        if existing != nil {
            try execute("UPDATE layers SET size = ? WHERE chain_id = ?", [size, chainID])
        } else {
            try execute("""
                INSERT INTO layers (chain_id, diff_id, blob_digest, blob_size, media_type, parent, link, size, created)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [chainID, layer.diffID, layer.descriptor.digest, layer.descriptor.size, layer.descriptor.mediaType,
                      parent, link, size, Self.now()])
        }
        recorded = true
        FaultInjection.point("import.recorded")
        return ImportedLayer(chainID: chainID, diffID: layer.diffID, blobDigest: layer.descriptor.digest, unpacked: true, size: size)
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
