import Foundation
@testable import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Images for the streaming-import and store-pull tests, and a writer that plays the download.
enum StreamImportSupport {
    static let busyboxLayout = fixturesDir + "/busybox"

    /// An OCI layout (tag `latest`) holding `base`'s image (tag `latest`) with one more gzip
    /// layer of `entries` on top: its first layers are `base`'s, blob for blob.
    static func extend(_ base: String, with entries: [TarEntry], into path: String) throws -> String {
        let blobs = path + "/blobs/sha256"
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: path + "/oci-layout"))
        let image = try OCIImageLayout(path: base).resolve("latest")
        for layer in image.layers {
            try FileManager.default.copyItem(atPath: base + "/blobs/sha256/" + layer.descriptor.digest.hex,
                                             toPath: blobs + "/" + layer.descriptor.digest.hex)
        }
        func write(_ bytes: [UInt8]) throws -> Digest {
            let digest = Digest.sha256(of: bytes)
            try Data(bytes).write(to: URL(fileURLWithPath: blobs + "/" + digest.hex))
            return digest
        }
        func json(_ value: JSONValue) throws -> [UInt8] { Array(try JSON.encode(value)) }
        func descriptor(_ mediaType: String, _ digest: Digest, _ size: Int) -> [String: JSONValue] {
            ["mediaType": .string(mediaType), "digest": .string(digest.description), "size": .integer(Int64(size))]
        }
        let tar = TarBuilder.build(entries)
        let blob = TarBuilder.build(entries, compression: .gzip)
        let blobDigest = try write(blob)

        var config = try JSON.decode([String: JSONValue].self, from: Data(image.configBytes), what: "the config")
        var rootfs = try #require(config["rootfs"]?.object, "the config has no rootfs object")
        rootfs["diff_ids"] = .array((image.layers.map(\.diffID.description) + [Digest.sha256(of: tar).description]).map(JSONValue.string))
        config["rootfs"] = .object(rootfs)
        let configBytes = try json(.object(config))
        let configDigest = try write(configBytes)

        var manifest = try JSON.decode([String: JSONValue].self, from: Data(image.manifestBytes), what: "the manifest")
        var layers = try #require(manifest["layers"]?.array, "the manifest has no layers array")
        layers.append(.object(descriptor(MediaType.ociLayer(.gzip), blobDigest, blob.count)))
        manifest["layers"] = .array(layers)
        manifest["config"] = .object(descriptor(MediaType.ociConfig, configDigest, configBytes.count))
        let manifestBytes = try json(.object(manifest))
        let manifestDigest = try write(manifestBytes)
        var entry = descriptor(MediaType.ociManifest, manifestDigest, manifestBytes.count)
        entry["annotations"] = .object(["org.opencontainers.image.ref.name": .string("latest")])
        entry["platform"] = .object(["architecture": .string("amd64"), "os": .string("linux")])
        let index: JSONValue = .object(["schemaVersion": .integer(2), "mediaType": .string(MediaType.ociIndex), "manifests": .array([.object(entry)])])
        try Data(try json(index)).write(to: URL(fileURLWithPath: path + "/index.json"))
        return path
    }

    /// The image of a layout as an import with its blobs to come sees it.
    static func incoming(_ layout: String) throws -> IncomingImage {
        let image = try OCIImageLayout(path: layout).resolve("latest")
        return try IncomingImage(manifest: image.manifestBytes, config: image.configBytes, source: layout)
    }

    /// Plays the downloads: writes each stream of `session` from the layout's blob files, in
    /// uneven chunks, in `order` (default bottom first), `corrupt` flipping one byte of the
    /// layer at that index. Returns, per layer, what stopped its writer (nil: finished or no stream).
    static func feed(_ session: StreamingImport, from layout: String, order: [Int]? = nil,
                     corrupt: Int? = nil) -> Task<[LayerStreamError.Kind?], Never> {
        let layers = session.image.layers, streams = session.streams
        return Task {
            var outcome = [LayerStreamError.Kind?](repeating: nil, count: layers.count)
            for index in order ?? Array(layers.indices) {
                guard let stream = streams[index] else { continue }
                guard var bytes = FileManager.default.contents(atPath: layout + "/blobs/sha256/" + layers[index].descriptor.digest.hex).map(Array.init) else {
                    stream.fail("the test has no blob for layer \(index)")
                    continue
                }
                if index == corrupt { bytes[bytes.count / 2] ^= 0xFF }
                var offset = 0, step = 1
                do throws(LayerStreamError) {
                    while offset < bytes.count {
                        let end = min(bytes.count, offset + step * 7001)
                        try await stream.write(Array(bytes[offset..<end]))
                        offset = end
                        step = step % 30 + 1
                    }
                    stream.finish()
                } catch {
                    outcome[index] = error.kind
                }
            }
            return outcome
        }
    }

    /// Names in a dir (["?"] when it cannot be read).
    static func names(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]).sorted() }

    /// Expects a store with nothing in it: no record, no blob, no layer dir, no link, no staging.
    static func expectEmpty(_ root: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let store = try LayerStore(root: root)
        #expect(try store.images().isEmpty, sourceLocation: sourceLocation)
        #expect(try store.layers().isEmpty, sourceLocation: sourceLocation)
        for dir in [store.paths.blobsDir, store.paths.layersDir, store.paths.linksDir, store.paths.stagingDir] {
            #expect(names(dir).isEmpty, "\(dir): \(names(dir))", sourceLocation: sourceLocation)
        }
        #expect(try store.verify() == [], sourceLocation: sourceLocation)
    }
}
