import Foundation
import Testing

/// OCI image layouts written and read by the tests, by hand (oci-layout, index.json, blobs under
/// blobs/sha256, documents as ImageSpec's types): the input LayerKit, umoci and skopeo read.
enum TestLayout {
    /// A layer to put in a layout: its blob as stored, and the diffID the config lists for it.
    struct Layer {
        var blob: Data
        var diffID: String
        var mediaType: String
    }

    static func blobPath(_ layout: String, _ digest: String) -> String {
        layout + "/blobs/sha256/" + digest.dropFirst("sha256:".count)
    }

    /// Writes `data` as a blob of `layout`; returns its digest and size.
    @discardableResult
    static func writeBlob(_ data: Data, in layout: String) throws -> (digest: String, size: Int) {
        let digest = DigestOracle.sha256(data)
        try data.write(to: URL(fileURLWithPath: blobPath(layout, digest)))
        return (digest, data.count)
    }

    /// Writes a document as a JSON blob (JSON.encode: compact, sorted keys).
    @discardableResult
    static func writeJSONBlob(_ document: some Encodable, in layout: String) throws -> (digest: String, size: Int) {
        try writeBlob(JSON.encode(document), in: layout)
    }

    /// Writes a complete layout with one image tagged `tag`: the layer blobs, a config (with
    /// `created` and the command `command` when given, and the layers' diffIDs), the manifest and
    /// `index.json` (with `indexMediaType` and the manifest's `platform` when given). Returns the
    /// manifest's digest.
    @discardableResult
    static func write(_ layout: String, layers: [Layer], tag: String = "latest", created: String? = nil,
                      command: [String]? = nil, platform: ImageSpec.Platform? = nil,
                      indexMediaType: String? = nil) throws -> String {
        try FileManager.default.createDirectory(atPath: layout + "/blobs/sha256", withIntermediateDirectories: true)
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: layout + "/oci-layout"))
        var descriptors = [ImageSpec.Descriptor]()
        for layer in layers {
            let (digest, size) = try writeBlob(layer.blob, in: layout)
            descriptors.append(ImageSpec.Descriptor(mediaType: layer.mediaType, digest: digest, size: Int64(size)))
        }
        let config = ImageSpec.Config(created: created, config: command.map { ImageSpec.Config.Execution(cmd: $0) },
                                      rootfs: ImageSpec.Config.RootFS(diffIDs: layers.map(\.diffID)))
        let configBlob = try writeJSONBlob(config, in: layout)
        let manifest = ImageSpec.Manifest(
            config: ImageSpec.Descriptor(mediaType: ImageSpec.configMediaType, digest: configBlob.digest, size: Int64(configBlob.size)),
            layers: descriptors)
        let manifestBlob = try writeJSONBlob(manifest, in: layout)
        let index = ImageSpec.Index(mediaType: indexMediaType, manifests: [
            ImageSpec.Descriptor(mediaType: ImageSpec.manifestMediaType, digest: manifestBlob.digest, size: Int64(manifestBlob.size),
                                 annotations: [ImageSpec.refNameAnnotation: tag], platform: platform),
        ])
        try JSON.write(index, to: layout + "/index.json")
        return manifestBlob.digest
    }

    /// The first manifest `index.json` lists.
    static func manifest(of layout: String) throws -> ImageSpec.Manifest {
        let index = try JSON.read(ImageSpec.Index.self, file: layout + "/index.json")
        let descriptor = try #require(index.manifests.first, "\(layout)/index.json lists no manifest")
        return try JSON.read(ImageSpec.Manifest.self, file: blobPath(layout, descriptor.digest))
    }

    /// The config's `rootfs.diff_ids` of the first manifest, read straight from the JSON.
    static func diffIDs(of layout: String) throws -> [String] {
        let manifest = try manifest(of: layout)
        return try JSON.read(ImageSpec.Config.self, file: blobPath(layout, manifest.config.digest)).rootfs.diffIDs
    }
}
