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
}

/// Committing a container's changes as a new layer and image.
extension LayerStore {
    public static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"
    public static let configMediaType = "application/vnd.oci.image.config.v1+json"

    /// Turns a container's upper dir into a layer on top of its image and records a new image
    /// `name` (replacing an image of that name).
    ///
    /// The upper dir is diffed (overlay whiteouts and opaque dirs, or the aufs form, become OCI
    /// whiteouts) into a blob in the content dir with both digests computed in the same pass; the
    /// blob is unpacked as a store layer like any imported one (skipped if that chainID exists);
    /// the image's config gets the new diffID and a history entry, its manifest the new layer; both
    /// are written as blobs; the image record comes last. The container may stay mounted: its
    /// mount is synced first (the FUSE driver's writeback cache), then its upper dir is only read
    /// (changes made during the commit may or may not be in the layer).
    public func commit(container id: String, as name: String, compression: Compression = .gzip, level: Int? = nil,
                       comment: String? = nil) throws(StoreError) -> CommitResult {
        try Self.validateName(name)
        try storeLock.lock(.shared)
        defer { storeLock.unlock() }
        guard let container = try container(id) else { throw StoreError(.notFound, "no container \(id.debugDescription)") }
        guard !container.readOnly else { throw StoreError(.invalidArgument, "container \(container.id) is read-only: it has no changes to commit") }

        let byChain = Dictionary(uniqueKeysWithValues: try layers().map { ($0.chainID, $0) })
        let chain = try Self.chain(of: container.chainID, in: byChain, path: paths.database)
        let baseLayers = chain.map { byChain[$0]! }
        try flushChanges(of: container.id)

        // 1. The layer blob, written inside the store (staging), renamed into blobs/ later.
        let staging = try makeStagingDirectory()
        defer { try? Self.removeTree(staging) }
        let blobPath = staging + "/layer.blob"
        // Not synced here: storeBlob(moving:) syncs it once it is in the content dir.
        let options = DiffOptions(compression: compression, level: level)
        let diff: DiffResult
        do { diff = try LayerDiffer(options: options).write(.upper(upperDir(of: container.id)), toFile: blobPath) } catch {
            throw StoreError(error)
        }
        let chainID = ChainID.chain(baseLayers.map(\.diffID) + [diff.diffID]).last!
        FaultInjection.point("commit.diffed")

        // 2. The layer itself, as an import would make it.
        // The blob goes into the content dir first (renamed, not copied) and is unpacked from
        // there; a crash in between leaves a blob no record needs, which gc removes.
        try storeBlob(moving: blobPath, digest: diff.descriptor.digest)
        let imported = try importLayer(ImageLayer(descriptor: diff.descriptor, diffID: diff.diffID,
                                                  blobPath: paths.blob(diff.descriptor.digest)),
                                       chainID: chainID, parent: container.chainID,
                                       lowerDirs: chain.reversed().map(paths.diffDir), name: "container \(container.id)")

        // 3. Config and manifest, from the base image's where the store has them.
        var base: StoredImage? = nil
        if let name = container.image, let found = try image(named: name), found.topChainID == container.chainID { base = found }
        var config = try baseJSON(base?.configDigest) ?? Self.minimalConfig()
        var rootfs = config["rootfs"] as? [String: Any] ?? ["type": "layers"]
        rootfs["diff_ids"] = baseLayers.map(\.diffID.description) + [diff.diffID.description]
        config["rootfs"] = rootfs
        let created = Self.timestamp()
        config["created"] = created
        var history = config["history"] as? [[String: Any]] ?? []
        var entry: [String: Any] = ["created": created, "created_by": "layertool commit \(container.id)"]
        if let comment { entry["comment"] = comment }
        history.append(entry)
        config["history"] = history
        let configBytes = try Self.json(config)
        let configDigest = try storeBlob(bytes: configBytes)

        var manifest: [String: Any]
        if let existing = try baseJSON(base?.manifestDigest) {
            manifest = existing
        } else {
            var descriptors = [[String: Any]]()
            for layer in baseLayers { descriptors.append(try Self.descriptorJSON(for: layer)) }
            manifest = ["schemaVersion": 2, "mediaType": Self.manifestMediaType, "layers": descriptors]
        }
        var layerList = manifest["layers"] as? [[String: Any]] ?? []
        layerList.append(["mediaType": diff.descriptor.mediaType, "digest": diff.descriptor.digest.description,
                          "size": diff.descriptor.size])
        manifest["layers"] = layerList
        manifest["config"] = ["mediaType": Self.configMediaType, "digest": configDigest.description, "size": configBytes.count]
        if manifest["mediaType"] == nil { manifest["mediaType"] = Self.manifestMediaType }
        let manifestBytes = try Self.json(manifest)
        let manifestDigest = try storeBlob(bytes: manifestBytes)
        FaultInjection.point("commit.blobs")

        try execute("""
            INSERT INTO images (name, manifest_digest, config_digest, top_chain_id, created) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                config_digest = excluded.config_digest, top_chain_id = excluded.top_chain_id, created = excluded.created
            """, [name, manifestDigest, configDigest, chainID, Self.now()])
        guard let image = try image(named: name) else { throw StoreError(.notFound, "image \(name) vanished after it was recorded") }
        return CommitResult(image: image, layer: diff, chainID: chainID, unpacked: imported.unpacked,
                            manifest: Descriptor(mediaType: Self.manifestMediaType, digest: manifestDigest, size: Int64(manifestBytes.count)))
    }

    // MARK: JSON

    private func baseJSON(_ digest: Digest?) throws(StoreError) -> [String: Any]? {
        guard let digest, hasBlob(digest) else { return nil }
        let bytes = try readBlob(digest)
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw StoreError(.incompatible, path: paths.blob(digest), "not a JSON object")
        }
        return object
    }

    /// A config for an image made from layers alone: the platform this runs on.
    static func minimalConfig() -> [String: Any] {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let architecture = ["x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"][machine] ?? machine
        return ["architecture": architecture, "os": "linux", "config": [String: Any](), "rootfs": ["type": "layers"]]
    }

    static func descriptorJSON(for layer: StoredLayer) throws(StoreError) -> [String: Any] {
        guard let digest = layer.blobDigest, let size = layer.blobSize else {
            throw StoreError(.incompatible, "layer \(layer.chainID) has no blob record: it cannot be listed in a manifest")
        }
        return ["mediaType": layer.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest.description, "size": size]
    }

    /// Compact JSON with sorted keys, so the same content gives the same digest.
    static func json(_ object: [String: Any]) throws(StoreError) -> [UInt8] {
        do {
            return [UInt8](try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
        } catch {
            throw StoreError(.invalidArgument, "cannot encode JSON: \(error)")
        }
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
