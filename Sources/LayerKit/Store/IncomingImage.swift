import Foundation

/// An image whose layer blobs are still to come — from a registry, say — as the store imports
/// it with `LayerStore.beginImport(_:name:)`: the manifest and config exactly as received (the
/// store keeps them byte for byte, so the image exports and pushes with the same digests), and
/// what they say of each layer.
///
/// Everything is checked when it is made: the manifest's size and shape, the config's digest
/// and size against the manifest's descriptor, `rootfs.type`, one diffID per layer, readable
/// layer media types.
public struct IncomingImage: Sendable {
    /// One layer: the blob to read and the diffID its tar must hash to.
    public struct Layer: Sendable, Equatable {
        /// The layer blob (digest, size, media type).
        public var descriptor: Descriptor
        /// The sha256 of its uncompressed tar, from the config.
        public var diffID: Digest
        /// Its chainID: its identity in the store.
        public var chainID: Digest
    }

    /// Where the image comes from, for messages (a registry reference).
    public let source: String
    /// The manifest's descriptor (digest and size of `manifestBytes`, its media type).
    public let manifestDescriptor: Descriptor
    /// The manifest, as received.
    public let manifestBytes: [UInt8]
    /// The manifest, decoded.
    public let manifest: ImageManifest
    /// The config, as received.
    public let configBytes: [UInt8]
    /// The config, decoded.
    public let config: ImageConfig
    /// Bottom layer first.
    public let layers: [Layer]

    /// The largest manifest taken (as containerd and the registry client refuse larger ones).
    public static let maximumManifestSize = 4 << 20

    /// Checks and decodes an image's manifest and config. `mediaType` is the manifest's, as the
    /// registry gave it, for a manifest that does not name its own; `expectedDigest`, when given
    /// (the digest a reference named), must be the manifest's. Errors name `source`.
    public init(manifest manifestBytes: [UInt8], mediaType: String? = nil, expectedDigest: Digest? = nil,
                config configBytes: [UInt8], source: String) throws(StoreError) {
        func invalid(_ reason: String) -> StoreError { StoreError(ImageError(.invalidDocument, source: source, reason)) }
        func unsupported(_ reason: String) -> StoreError { StoreError(ImageError(.unsupported, source: source, reason)) }

        guard manifestBytes.count <= Self.maximumManifestSize else {
            throw unsupported("the manifest is \(manifestBytes.count) bytes, over the 4 MiB limit")
        }
        let manifestDigest = Digest.sha256(of: manifestBytes)
        if let expectedDigest, expectedDigest != manifestDigest {
            throw StoreError(ImageError(.blobMismatch, source: source, "the manifest hashes to \(manifestDigest), not \(expectedDigest)"))
        }
        let manifest: ImageManifest
        do { manifest = try JSONDecoder().decode(ImageManifest.self, from: Data(manifestBytes)) } catch {
            throw invalid("the manifest \(manifestDigest) is not a valid image manifest")
        }
        let manifestType = manifest.mediaType ?? mediaType ?? MediaType.ociManifest
        guard MediaType.isManifest(manifestType) else { throw unsupported("not an image manifest: media type \(manifestType.prefix(100))") }

        guard Int64(configBytes.count) == manifest.config.size, Digest.sha256(of: configBytes) == manifest.config.digest else {
            throw StoreError(ImageError(.blobMismatch, source: source,
                                        "the config does not match its descriptor (\(manifest.config.digest), \(manifest.config.size) bytes)"))
        }
        guard manifest.config.mediaType == MediaType.ociConfig || manifest.config.mediaType == MediaType.dockerConfig else {
            throw unsupported("not a container image: config media type \(manifest.config.mediaType.prefix(100))")
        }
        let config: ImageConfig
        do { config = try JSONDecoder().decode(ImageConfig.self, from: Data(configBytes)) } catch {
            throw invalid("the config \(manifest.config.digest) is not a valid image config")
        }
        guard config.rootfs.type == "layers" else { throw invalid("config rootfs.type is \"\(config.rootfs.type.prefix(40))\", not \"layers\"") }
        guard config.rootfs.diffIDs.count == manifest.layers.count else {
            throw invalid("the manifest lists \(manifest.layers.count) layers but the config has \(config.rootfs.diffIDs.count) diff_ids")
        }
        let chain = ChainID.chain(config.rootfs.diffIDs)
        var layers = [Layer]()
        for (i, (descriptor, diffID)) in zip(manifest.layers, config.rootfs.diffIDs).enumerated() {
            guard MediaType.readableLayers.contains(descriptor.mediaType) else {
                throw unsupported("layer \(descriptor.digest): unsupported media type \(descriptor.mediaType.prefix(100))")
            }
            guard descriptor.size >= 0 else { throw invalid("layer \(descriptor.digest): negative size \(descriptor.size)") }
            layers.append(Layer(descriptor: descriptor, diffID: diffID, chainID: chain[i]))
        }
        self.source = source
        self.manifestDescriptor = Descriptor(mediaType: manifestType, digest: manifestDigest, size: Int64(manifestBytes.count))
        self.manifestBytes = manifestBytes
        self.manifest = manifest
        self.configBytes = configBytes
        self.config = config
        self.layers = layers
    }

    /// The chainID of the whole stack; nil for an image without layers.
    public var chainID: Digest? { layers.last?.chainID }
}
