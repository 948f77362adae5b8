import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A `docker save` tarball, opened as an OCI image layout.
///
/// Docker 25+ writes an OCI layout inside the tar (`oci-layout`, `index.json`, `blobs/`), which is
/// used as it is. Older Dockers write `manifest.json` (`Config`, `RepoTags`, `Layers` as
/// `<id>/layer.tar`) with uncompressed layers; those are turned into a layout beside them: each
/// layer and the config moved into `blobs/sha256/` under its digest, an OCI manifest listing the
/// layers as `application/vnd.oci.image.layer.v1.tar` (their digests are their diffIDs), and an
/// `index.json` tagging it with the first of `RepoTags`.
public enum DockerArchive {
    /// Whether `path` is a regular file (a tarball) rather than a layout dir.
    public static func isArchive(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && FileSystem.fileType(st) == mode_t(S_IFREG)
    }

    /// Extracts the archive into `directory` (created; it must not exist or be empty) with the
    /// apply engine, so nothing lands outside it whatever the tar says, and returns the layout
    /// there with the reference to use (`reference` if given, else the archive's first tag) and,
    /// for an older Docker's archive without a reference given, that full tag (`busybox:latest`).
    public static func extract(_ archive: String, into directory: String,
                               reference: String?) throws(LayerError) -> (layout: OCIImageLayout, reference: String?, tag: String?) {
        _ = try Unpacker().unpack([LayerInput(source: .path(archive))], to: directory)
        func fail(_ reason: String) -> LayerError { LayerError(.invalidEntry, layer: archive, reason) }

        if access(directory + "/index.json", F_OK) == 0 && access(directory + "/oci-layout", F_OK) == 0 {
            return (OCIImageLayout(path: directory), reference, nil)
        }
        guard let data = FileManager.default.contents(atPath: directory + "/manifest.json"),
              let entries = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]], !entries.isEmpty else {
            throw fail("not a docker save archive or OCI layout (no manifest.json or index.json)")
        }
        let blobs = directory + "/blobs/sha256"
        do { try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true) } catch {
            throw fail("cannot create \(blobs): \(error.localizedDescription)")
        }

        var manifests = [[String: Any]]()
        for entry in entries {
            guard let configName = entry["Config"] as? String, let layerNames = entry["Layers"] as? [String] else {
                throw fail("manifest.json: an entry without Config or Layers")
            }
            let config = try moveToBlobs(configName, in: directory, archive: archive)
            var layers = [[String: Any]]()
            for name in layerNames {
                let layer = try moveToBlobs(name, in: directory, archive: archive)
                layers.append(["mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest.description, "size": layer.size])
            }
            let manifest: [String: Any] = [
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.description, "size": config.size],
                "layers": layers,
            ]
            let bytes = try json(manifest, archive: archive)
            let digest = Digest.sha256(of: bytes)
            try write(bytes, to: blobs + "/" + digest.hex, archive: archive)
            let tags = entry["RepoTags"] as? [String] ?? []
            for tag in tags.isEmpty ? [""] : tags {
                var descriptor: [String: Any] = ["mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                 "digest": digest.description, "size": bytes.count]
                if !tag.isEmpty { descriptor["annotations"] = ["org.opencontainers.image.ref.name": tagPart(tag)] }
                manifests.append(descriptor)
            }
        }
        try write(try json(["schemaVersion": 2, "manifests": manifests], archive: archive), to: directory + "/index.json", archive: archive)
        try write(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: directory + "/oci-layout", archive: archive)
        let firstTag = (entries[0]["RepoTags"] as? [String])?.first
        return (OCIImageLayout(path: directory), reference ?? firstTag.map(tagPart), reference == nil ? firstTag : nil)
    }

    /// `busybox:latest` → `latest`; `registry:5000/x:1` → `1`; a name without a tag → itself.
    static func tagPart(_ tag: String) -> String {
        let last = tag.split(separator: "/").last.map(String.init) ?? tag
        guard let colon = last.lastIndex(of: ":") else { return tag }
        return String(last[last.index(after: colon)...])
    }

    /// Moves a file named by manifest.json (relative, inside the extracted dir) to the blobs
    /// under its digest.
    private static func moveToBlobs(_ name: String, in directory: String, archive: String) throws(LayerError) -> (digest: Digest, size: Int64) {
        // Lexically inside, and still inside once symlinks in the extracted tree are resolved.
        let root = MountTable.resolve(directory)
        guard let path = EntryPath.clean(name), !path.isRoot,
              MountTable.resolve(directory + "/" + path.description).hasPrefix(root + "/") else {
            throw LayerError(.pathEscapes, entry: name, layer: archive, "manifest.json names a file outside the archive")
        }
        let source = MountTable.resolve(directory + "/" + path.description)
        var st = stat()
        guard lstat(source, &st) == 0, FileSystem.fileType(st) == mode_t(S_IFREG) else {
            throw LayerError(.invalidEntry, entry: name, layer: archive, "manifest.json names a file the archive does not have")
        }
        guard let data = FileManager.default.contents(atPath: source) else {
            throw LayerError(.input, entry: name, layer: archive, "cannot read")
        }
        let digest = Digest.sha256(of: data)
        let target = directory + "/blobs/sha256/" + digest.hex
        if access(target, F_OK) != 0 {
            guard link(source, target) == 0 || rename(source, target) == 0 else {
                throw LayerError(.system(.init(rawValue: errno)), entry: name, layer: archive, "cannot move into blobs/")
            }
        }
        return (digest, Int64(data.count))
    }

    private static func json(_ object: Any, archive: String) throws(LayerError) -> [UInt8] {
        do { return [UInt8](try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) } catch {
            throw LayerError(.input, layer: archive, "cannot encode JSON: \(error)")
        }
    }

    private static func write(_ bytes: [UInt8], to path: String, archive: String) throws(LayerError) {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw LayerError(.system(.init(rawValue: errno)), layer: archive, "cannot write \(path)")
        }
    }
}
