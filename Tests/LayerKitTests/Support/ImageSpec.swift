import Foundation

/// The OCI image-spec documents the tests write and read (descriptor, index, manifest, config),
/// as Codable types of the tests' own: layouts built with them do not go through LayerKit's
/// `Descriptor`, `ImageManifest` or `ImageConfig`, so a mistake there cannot cancel itself out.
/// Only the fields the tests use; optional ones are left out of the JSON when nil.
enum ImageSpec {
    static let indexMediaType = "application/vnd.oci.image.index.v1+json"
    static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"
    static let configMediaType = "application/vnd.oci.image.config.v1+json"
    static let layerMediaType = "application/vnd.oci.image.layer.v1.tar"
    static let gzipLayerMediaType = layerMediaType + "+gzip"

    /// The annotation that tags a manifest in `index.json`.
    static let refNameAnnotation = "org.opencontainers.image.ref.name"

    struct Descriptor: Codable, Equatable {
        var mediaType: String
        var digest: String
        var size: Int64
        var annotations: [String: String]? = nil
        var platform: Platform? = nil
    }

    struct Platform: Codable, Equatable {
        var architecture: String
        var os: String
    }

    struct Index: Codable, Equatable {
        var schemaVersion = 2
        var mediaType: String? = nil
        var manifests: [Descriptor]
    }

    struct Manifest: Codable, Equatable {
        var schemaVersion = 2
        var mediaType: String? = ImageSpec.manifestMediaType
        var config: Descriptor
        var layers: [Descriptor]
    }

    struct Config: Codable, Equatable {
        var architecture = "amd64"
        var os = "linux"
        var created: String? = nil
        var config: Execution? = nil
        var rootfs: RootFS

        /// The image's default command (`config.Cmd`).
        struct Execution: Codable, Equatable {
            var cmd: [String]?
            enum CodingKeys: String, CodingKey { case cmd = "Cmd" }
        }

        struct RootFS: Codable, Equatable {
            var type = "layers"
            var diffIDs: [String]
            enum CodingKeys: String, CodingKey {
                case type
                case diffIDs = "diff_ids"
            }
        }
    }
}
