import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `LayerStore.exportImage` wrote.
public struct ExportResult: Sendable, Codable, Equatable {
    /// The layout dir.
    public var layout: String
    /// The reference the manifest is tagged with in `index.json`.
    public var reference: String
    /// The manifest as listed in `index.json`.
    public var manifest: Descriptor
    /// Blobs copied (the others were in the layout already).
    public var blobsWritten: Int
    /// Layers rewritten from zstd to gzip.
    public var layersRecompressed: Int
}

/// Exporting an image to an OCI image layout (what umoci, skopeo and buildah read).
extension LayerStore {
    static let refAnnotation = "org.opencontainers.image.ref.name"

    /// Writes image `name` into the OCI layout at `layoutPath` (created if missing; an existing
    /// layout keeps its other images) tagged `reference` (default: the name's tag, or the name).
    ///
    /// Blobs are copied from the content dir, each under a temporary name then renamed, and
    /// `index.json` is replaced last, atomically: an interrupted export leaves the layout as it was
    /// plus some complete blobs. With `gzipLayers`, zstd layers are rewritten as gzip (same
    /// diffIDs, so the config is unchanged; the manifest is new) for tools that cannot read zstd.
    public func exportImage(_ name: String, to layoutPath: String, reference: String? = nil,
                            gzipLayers: Bool = false) throws(StoreError) -> ExportResult {
        guard let image = try image(named: name) else { throw StoreError(.notFound, "no image named \(name.debugDescription)") }
        let reference = reference ?? DockerArchive.tagPart(name)
        guard !reference.isEmpty else { throw StoreError(.invalidArgument, "empty reference") }
        let manifestBytes = try readBlob(image.manifestDigest)
        guard var manifestJSON = try? JSONSerialization.jsonObject(with: Data(manifestBytes)) as? [String: Any],
              let manifest = try? JSONDecoder().decode(ImageManifest.self, from: Data(manifestBytes)) else {
            throw StoreError(.incompatible, path: paths.blob(image.manifestDigest), "not an image manifest")
        }
        let config = try readBlob(manifest.config.digest)
        let diffIDs = (try? JSONDecoder().decode(ImageConfig.self, from: Data(config)))?.rootfs.diff_ids ?? []

        let blobs = layoutPath + "/blobs/sha256"
        do {
            try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        } catch {
            throw StoreError(.system(.permissionDenied), path: blobs, "cannot create the layout: \(error.localizedDescription)")
        }
        let layoutFile = layoutPath + "/oci-layout"
        if access(layoutFile, F_OK) != 0 {
            try Self.writeAtomically(layoutFile, Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        }

        var written = 0, recompressed = 0
        func copy(_ digest: Digest) throws(StoreError) {
            let target = blobs + "/" + digest.hex
            guard access(target, F_OK) != 0 else { return }
            try Self.copyFileAtomically(paths.blob(digest), to: target)
            written += 1
        }
        try copy(manifest.config.digest)
        var layerList = manifestJSON["layers"] as? [[String: Any]] ?? []
        for (i, layer) in manifest.layers.enumerated() {
            if gzipLayers && layer.mediaType.hasSuffix("+zstd") {
                let temp = blobs + "/.tmp-\(layer.digest.hex.prefix(12))-\(getpid())"
                let result: DiffResult
                do {
                    result = try LayerRecompressor.recompress(paths.blob(layer.digest), to: temp, compression: .gzip,
                                                              expectedDiffID: i < diffIDs.count ? diffIDs[i] : nil)
                } catch { throw StoreError(error) }
                let target = blobs + "/" + result.descriptor.digest.hex
                guard rename(temp, target) == 0 else { unlink(temp); throw .lastErrno(path: target, "cannot rename blob into place") }
                layerList[i]["mediaType"] = layer.mediaType.replacingOccurrences(of: "+zstd", with: "+gzip")
                layerList[i]["digest"] = result.descriptor.digest.description
                layerList[i]["size"] = result.descriptor.size
                recompressed += 1
                written += 1
            } else {
                try copy(layer.digest)
            }
        }
        var finalManifest = manifestBytes
        if recompressed > 0 {
            manifestJSON["layers"] = layerList
            finalManifest = try Self.json(manifestJSON)
        }
        let manifestDigest = Digest.sha256(of: finalManifest)
        if access(blobs + "/" + manifestDigest.hex, F_OK) != 0 {
            try Self.writeAtomically(blobs + "/" + manifestDigest.hex, finalManifest)
            written += 1
        }
        let descriptor = Descriptor(mediaType: manifest.mediaType ?? Self.manifestMediaType, digest: manifestDigest,
                                    size: Int64(finalManifest.count), annotations: [Self.refAnnotation: reference])

        // index.json: this reference replaced, everything else kept as it was.
        let indexPath = layoutPath + "/index.json"
        var index: [String: Any] = ["schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [Any]()]
        if let data = FileManager.default.contents(atPath: indexPath) {
            guard let parsed = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw StoreError(.incompatible, path: indexPath, "not a JSON object")
            }
            index = parsed
        }
        var manifests = (index["manifests"] as? [[String: Any]] ?? []).filter {
            (($0["annotations"] as? [String: Any])?[Self.refAnnotation] as? String) != reference
        }
        manifests.append(["mediaType": descriptor.mediaType, "digest": manifestDigest.description, "size": descriptor.size,
                          "annotations": [Self.refAnnotation: reference]])
        index["manifests"] = manifests
        try Self.writeAtomically(indexPath, try Self.json(index))
        return ExportResult(layout: layoutPath, reference: reference, manifest: descriptor, blobsWritten: written,
                            layersRecompressed: recompressed)
    }

    static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws(StoreError) {
        let temp = path + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .lastErrno(path: temp, "cannot create") }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temp, path) == 0 else {
            let error = StoreError.lastErrno(path: path, "cannot write")
            unlink(temp)
            throw error
        }
    }

    static func copyFileAtomically(_ source: String, to path: String) throws(StoreError) {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw .lastErrno(path: source, "cannot open") }
        defer { close(input) }
        let temp = path + ".tmp-\(getpid())"
        let output = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw .lastErrno(path: temp, "cannot create") }
        var ok = false
        defer {
            close(output)
            if !ok { unlink(temp) }
        }
        try copyByReading(input, to: output, path: source)
        guard fsync(output) == 0, rename(temp, path) == 0 else { throw .lastErrno(path: path, "cannot write") }
        ok = true
    }
}
