import Foundation
import LayerKit

/// An image as a registry describes it, resolved to one platform: its manifest, config and
/// layers (each with the diffID the config gives it). Everything here was checked against its
/// digest.
public struct RemoteImage: Sendable {
    /// One layer: the blob to fetch and the diffID its uncompressed tar must have.
    public struct Layer: Sendable {
        /// The layer blob (digest, size, media type) and the diffID of its uncompressed tar.
        public var descriptor: Descriptor
        public var diffID: Digest
    }

    /// The reference as given.
    public var reference: ImageReference
    /// The index the reference named, when it named one.
    public var index: FetchedManifest?
    /// The platform picked from the index.
    public var platform: Platform?
    /// The image manifest, as received.
    public var manifest: FetchedManifest
    /// The manifest, decoded.
    public var parsedManifest: ImageManifest
    /// The config, as received.
    public var configBytes: [UInt8]
    /// The config, decoded.
    public var config: ImageConfig
    /// Bottom layer first.
    public var layers: [Layer]

    /// The chainID of the whole stack; nil for an image without layers.
    public var chainID: Digest? { ChainID.of(layers.map(\.diffID)) }
}

extension RegistryClient {
    /// Reads `reference`'s manifest, follows an index to the manifest for `platform`, and reads
    /// the config: everything an unpack needs before the first layer.
    public func resolveImage(_ reference: ImageReference, platform: Platform = .host) async throws(RegistryError) -> RemoteImage {
        let name = reference.description
        var fetched = try await fetchManifest(reference)
        var index: FetchedManifest? = nil
        var chosen: Platform? = nil
        var depth = 0
        while MediaType.isIndex(fetched.descriptor.mediaType) {
            depth += 1
            guard depth <= 4 else { throw RegistryError(.unsupported, reference: name, "indexes nested more than 4 deep") }
            let parsed: ImageIndex
            do { parsed = try JSONDecoder().decode(ImageIndex.self, from: Data(fetched.bytes)) } catch {
                throw RegistryError(.protocolViolation, reference: name, "the index \(fetched.descriptor.digest) is not a valid image index")
            }
            guard let pick = platform.select(from: parsed.manifests) else {
                let offered = parsed.manifests.compactMap { $0.platform.map { [$0.os, $0.architecture, $0.variant].compactMap { $0 }.joined(separator: "/") } }
                throw RegistryError(.unsupported, reference: name,
                                    "no manifest for \(platform) in the index (it has: \(offered.isEmpty ? "no platforms" : offered.joined(separator: ", ")))")
            }
            guard pick.size <= Int64(Self.maximumManifestSize) else {
                throw RegistryError(.unsupported, reference: name, "the manifest for \(platform) is \(pick.size) bytes, over the 4 MiB limit")
            }
            index = fetched
            chosen = pick.platform
            fetched = try await fetchManifest(reference.with(digest: pick.digest))
            guard fetched.descriptor.size == pick.size else {
                throw RegistryError(.digestMismatch, reference: name, "the manifest \(pick.digest) is \(fetched.descriptor.size) bytes, the index says \(pick.size)")
            }
        }
        let manifest: ImageManifest
        do { manifest = try JSONDecoder().decode(ImageManifest.self, from: Data(fetched.bytes)) } catch {
            throw RegistryError(.protocolViolation, reference: name, "the manifest \(fetched.descriptor.digest) is not a valid image manifest")
        }
        let configType = manifest.config.mediaType
        guard configType == MediaType.ociConfig || configType == MediaType.dockerConfig else {
            throw RegistryError(.unsupported, reference: name, "not a container image: config media type \(RegistryErrorResponse.sanitize(configType, limit: 100))")
        }
        let configBytes = try await fetchBlobBytes(manifest.config, from: reference.repository)
        let config: ImageConfig
        do { config = try JSONDecoder().decode(ImageConfig.self, from: Data(configBytes)) } catch {
            throw RegistryError(.protocolViolation, reference: name, "the config \(manifest.config.digest) is not a valid image config")
        }
        guard config.rootfs.type == "layers" else {
            throw RegistryError(.unsupported, reference: name, "config rootfs.type is \"\(RegistryErrorResponse.sanitize(config.rootfs.type, limit: 40))\", not \"layers\"")
        }
        guard config.rootfs.diffIDs.count == manifest.layers.count else {
            throw RegistryError(.protocolViolation, reference: name,
                                "the manifest lists \(manifest.layers.count) layers but the config has \(config.rootfs.diffIDs.count) diff_ids")
        }
        var layers = [RemoteImage.Layer]()
        for (layer, diffID) in zip(manifest.layers, config.rootfs.diffIDs) {
            guard MediaType.readableLayers.contains(layer.mediaType) else {
                throw RegistryError(.unsupported, reference: name, "layer \(layer.digest): unsupported media type \(RegistryErrorResponse.sanitize(layer.mediaType, limit: 100))")
            }
            guard layer.size >= 0 else { throw RegistryError(.protocolViolation, reference: name, "layer \(layer.digest): negative size") }
            layers.append(RemoteImage.Layer(descriptor: layer, diffID: diffID))
        }
        return RemoteImage(reference: reference, index: index, platform: chosen, manifest: fetched, parsedManifest: manifest,
                           configBytes: configBytes, config: config, layers: layers)
    }
}
