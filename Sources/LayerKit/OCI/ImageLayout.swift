import Foundation

/// An OCI content descriptor (image-spec descriptor.md).
public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?
    public var platform: Platform?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

/// The platform an image manifest is for.
public struct Platform: Codable, Sendable, Equatable {
    public var architecture: String
    public var os: String
    public var variant: String?
}

/// An image index (`index.json` of a layout, or a multi-platform index blob).
public struct ImageIndex: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
}

/// An image manifest.
public struct ImageManifest: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
}

/// The parts of an image config this package reads.
public struct ImageConfig: Codable, Sendable {
    public struct RootFS: Codable, Sendable {
        public var type: String
        public var diff_ids: [Digest]
    }
    public var architecture: String?
    public var os: String?
    public var rootfs: RootFS
}

/// Media types of layers this package reads.
public enum LayerMediaType {
    public static let readable: Set<String> = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ]
}

/// A layer of a resolved image: where its blob is and what it must hash to.
public struct ImageLayer: Sendable {
    public var descriptor: Descriptor
    public var diffID: Digest
    public var blobPath: String
}

/// An image picked out of a layout: its manifest, config and layers, bottom layer first.
public struct ResolvedImage: Sendable {
    public var reference: String?
    public var manifestDescriptor: Descriptor
    public var manifest: ImageManifest
    public var config: ImageConfig
    public var layers: [ImageLayer]

    /// The chainID of each layer, bottom first.
    public var chainIDs: [Digest] { ChainID.chain(layers.map(\.diffID)) }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`), as written by skopeo,
/// umoci and buildah.
public struct OCIImageLayout: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Splits `LAYOUT[:REF]` (the form skopeo and umoci take).
    public static func parse(_ spec: String) -> (layout: String, reference: String?) {
        if let colon = spec.lastIndex(of: ":"), !spec[spec.index(after: colon)...].contains("/") {
            let ref = String(spec[spec.index(after: colon)...])
            return (String(spec[..<colon]), ref.isEmpty ? nil : ref)
        }
        return (spec, nil)
    }

    public func blobPath(_ digest: Digest) -> String { "\(path)/blobs/\(digest.algorithm)/\(digest.hex)" }

    /// Finds the manifest named `reference` (annotation `org.opencontainers.image.ref.name`);
    /// without one, the only manifest, or the one tagged `latest`. An index inside is followed to
    /// the manifest for this machine's platform (linux/amd64 or linux/arm64). Every blob read on
    /// the way is checked against its digest and size.
    public func resolve(_ reference: String?) throws(LayerError) -> ResolvedImage {
        let layoutName = path
        func fail(_ reason: String) -> LayerError { LayerError(.invalidEntry, layer: layoutName, reason) }

        guard let layoutData = FileManager.default.contents(atPath: path + "/oci-layout") else {
            throw fail("not an OCI image layout (no oci-layout file)")
        }
        if let obj = try? JSONSerialization.jsonObject(with: layoutData) as? [String: Any],
           let version = obj["imageLayoutVersion"] as? String, !version.hasPrefix("1.") {
            throw fail("unsupported imageLayoutVersion \(version)")
        }
        guard let indexData = FileManager.default.contents(atPath: path + "/index.json") else {
            throw fail("missing index.json")
        }
        let index: ImageIndex
        do { index = try JSONDecoder().decode(ImageIndex.self, from: indexData) } catch {
            throw fail("index.json: \(error)")
        }
        let refKey = "org.opencontainers.image.ref.name"
        var candidates = index.manifests
        if let reference {
            candidates = candidates.filter { $0.annotations?[refKey] == reference }
            guard !candidates.isEmpty else {
                let known = index.manifests.compactMap { $0.annotations?[refKey] }
                throw fail("no image tagged \"\(reference)\" (tags: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            }
        } else if candidates.count > 1 {
            let latest = candidates.filter { $0.annotations?[refKey] == "latest" }
            guard latest.count == 1 else {
                let known = index.manifests.compactMap { $0.annotations?[refKey] }
                throw fail("the layout holds \(candidates.count) images: name one with LAYOUT:REF (tags: \(known.joined(separator: ", ")))")
            }
            candidates = latest
        }
        guard var descriptor = candidates.first else { throw fail("index.json lists no manifests") }

        // Follow nested indexes to the manifest for this platform.
        var depth = 0
        while Self.isIndex(descriptor.mediaType) {
            depth += 1
            guard depth < 8 else { throw fail("nested indexes too deep") }
            let data = try readBlob(descriptor)
            let nested: ImageIndex
            do { nested = try JSONDecoder().decode(ImageIndex.self, from: data) } catch {
                throw fail("index \(descriptor.digest): \(error)")
            }
            guard let pick = nested.manifests.first(where: { $0.platform.map { $0.os == "linux" && $0.architecture == Self.hostArchitecture } ?? false })
                    ?? (nested.manifests.count == 1 ? nested.manifests.first : nil) else {
                throw fail("index \(descriptor.digest) has no manifest for linux/\(Self.hostArchitecture)")
            }
            descriptor = pick
        }

        let manifestData = try readBlob(descriptor)
        let manifest: ImageManifest
        do { manifest = try JSONDecoder().decode(ImageManifest.self, from: manifestData) } catch {
            throw fail("manifest \(descriptor.digest): \(error)")
        }
        let configData = try readBlob(manifest.config)
        let config: ImageConfig
        do { config = try JSONDecoder().decode(ImageConfig.self, from: configData) } catch {
            throw fail("config \(manifest.config.digest): \(error)")
        }
        guard config.rootfs.type == "layers" else { throw fail("config rootfs.type is \"\(config.rootfs.type)\", not \"layers\"") }
        guard config.rootfs.diff_ids.count == manifest.layers.count else {
            throw fail("the manifest lists \(manifest.layers.count) layers but the config has \(config.rootfs.diff_ids.count) diff_ids")
        }
        var layers = [ImageLayer]()
        for (layer, diffID) in zip(manifest.layers, config.rootfs.diff_ids) {
            guard LayerMediaType.readable.contains(layer.mediaType) else {
                throw fail("layer \(layer.digest): unsupported media type \(layer.mediaType)")
            }
            layers.append(ImageLayer(descriptor: layer, diffID: diffID, blobPath: blobPath(layer.digest)))
        }
        return ResolvedImage(reference: reference ?? descriptor.annotations?[refKey], manifestDescriptor: descriptor,
                             manifest: manifest, config: config, layers: layers)
    }

    /// Reads a small blob (index, manifest, config) and checks its size and digest.
    public func readBlob(_ descriptor: Descriptor) throws(LayerError) -> Data {
        let file = blobPath(descriptor.digest)
        guard let data = FileManager.default.contents(atPath: file) else {
            throw LayerError(.input, layer: path, "blob \(descriptor.digest) is missing")
        }
        guard Int64(data.count) == descriptor.size else {
            throw LayerError(.digestMismatch, layer: path, "blob \(descriptor.digest): size \(data.count), descriptor says \(descriptor.size)")
        }
        let actual = Digest.sha256(of: data)
        guard actual == descriptor.digest else {
            throw LayerError(.digestMismatch, layer: path, "blob \(descriptor.digest): content hashes to \(actual)")
        }
        return data
    }

    static func isIndex(_ mediaType: String) -> Bool {
        mediaType == "application/vnd.oci.image.index.v1+json"
            || mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
    }

    static var hostArchitecture: String {
        #if arch(x86_64)
        return "amd64"
        #elseif arch(arm64)
        return "arm64"
        #else
        return "unknown"
        #endif
    }
}
