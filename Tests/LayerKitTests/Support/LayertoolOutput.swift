import Foundation

/// What `layertool ... --json` prints, as the tests read it: Decodable mirrors of the documented
/// output (README), written here rather than shared with the CLI's sources, so a renamed or
/// retyped field fails a test. Only the fields the tests check; a field the CLI leaves out when
/// it has no value is optional.
enum LayertoolOutput {
    /// `unpack --json LAYER... DEST` and `inspect --json`: one per layer, in order.
    struct Layer: Decodable {
        var layer: String
        var blobDigest: String
        var diffID: String
        var chainID: String?
        var compression: String
        var blobSize: Int64
        var tarSize: Int64
        var entries: Int
        var stageWaits: StageWaits?

        struct StageWaits: Decodable {
            var decoding: Double
            var applying: Double
        }
    }

    /// `unpack --image LAYOUT --json` without DEST: an import into the store.
    struct Import: Decodable {
        var name: String
        var chainID: String?
        var manifestDigest: String
        var layers: [ImportedLayer]

        struct ImportedLayer: Decodable {
            var chainID: String
            var unpacked: Bool
        }
    }

    /// A row of `ls images --json`.
    struct Image: Decodable {
        var name: String
        var chainID: String?
        var manifestDigest: String?
        var layers: [String]
        var size: Int64
    }

    /// A row of `ls layers --json`.
    struct StoreLayer: Decodable {
        var chainID: String
        var parent: String?
        var size: Int64
        var images: [String]
    }

    /// A row of `ls containers --json`.
    struct Container: Decodable {
        var id: String
        var state: String
        /// Bytes on disk of its upper dir.
        var size: Int64
    }

    /// `gc --json`.
    struct GarbageCollection: Decodable {
        var removed: [Removed]
        var freedBytes: Int64

        struct Removed: Decodable {
            var chainID: String
        }
    }

    /// `mount --json`.
    struct Mount: Decodable {
        var driver: String
        var method: String?
        var spec: Spec
        var fallbackReason: String?

        struct Spec: Decodable {
            var type: String
            var source: String
            var options: [String]
        }
    }

    /// `pull --json`.
    struct Pull: Decodable {
        var reference: String
        var manifestDigest: String
        var layers: [Layer]
    }

    /// `pull --json REF` into the store.
    struct StorePull: Decodable {
        struct Layer: Decodable {
            var digest: String
            var size: Int64
            var downloaded: Bool
            /// present, appeared, unpacked, blob-added.
            var outcome: String
        }
        var name: String
        var root: String
        var manifestDigest: String
        var chainID: String?
        var seconds: Double
        var layers: [Layer]
    }

    /// `push --json`: what happened to each blob.
    struct Push: Decodable {
        var blobs: [Blob]

        struct Blob: Decodable {
            /// `uploaded`, `present` or `mounted`.
            var outcome: String
        }
    }

    /// `commit --json`.
    struct Commit: Decodable {
        var chainID: String
    }

    /// `export --json`.
    struct Export: Decodable {
        var reference: String
        var manifest: ImageSpec.Descriptor
    }
}
