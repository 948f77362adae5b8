import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A `docker save` tarball, opened as an OCI image layout.
///
/// Docker 25+ writes an OCI layout inside the tar (`oci-layout`, `index.json`, `blobs/`), which is
/// used as it is. Older Dockers write `manifest.json` (`Config`, `RepoTags`, `Layers` as
/// `<id>/layer.tar`) with uncompressed layers; those are turned into a layout beside them: each
/// layer and the config linked into `blobs/sha256/` under its digest, an OCI manifest listing the
/// layers as `application/vnd.oci.image.layer.v1.tar` (their digests are their diffIDs), and an
/// `index.json` tagging it with the first of `RepoTags`.
///
/// The archive is extracted with the apply engine (nothing lands outside the directory, whatever
/// the tar says), and every file it names is then opened inside that directory the way an OCI
/// layout's blobs are: a symlink in the archive can only lead to another file of the archive.
public enum DockerArchive {
    /// An archive turned into a layout.
    public struct Extracted: Sendable {
        /// The layout (inside the directory it was extracted to).
        public var layout: OCIImageLayout
        /// The reference to use: the one asked for, or the archive's first tag.
        public var reference: String?
        /// For an older Docker's archive without a reference given, its first full tag (`busybox:latest`).
        public var tag: String?
    }

    /// One image of an older Docker's `manifest.json`.
    struct LegacyEntry: Decodable {
        var config: String
        var repoTags: [String]?
        var layers: [String]

        enum CodingKeys: String, CodingKey {
            case config = "Config", repoTags = "RepoTags", layers = "Layers"
        }
    }

    /// Whether `path` is a regular file (a tarball) rather than a layout dir.
    public static func isArchive(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && FileSystem.isRegularFile(st)
    }

    /// Extracts the archive below `directory` (created; it must not exist or be empty) and returns
    /// the layout: the archive's own (`directory/archive`) for Docker 25+'s OCI form, or one made in
    /// `directory/layout` for the older form (a fresh dir: nothing from the archive is written into).
    public static func extract(_ archive: String, into directory: String, reference: String?) throws(ImageError) -> Extracted {
        func fail(_ kind: ImageError.Kind, _ reason: String) -> ImageError { ImageError(kind, source: archive, reason) }
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw fail(.system(Errno(rawValue: errno)), "cannot create \(directory)") }
        let contents = directory + "/archive"
        do throws(LayerError) { _ = try Unpacker().unpack([LayerInput(source: .path(archive))], to: contents) } catch {
            throw ImageError(source: archive, error)
        }
        let rootFD = open(contents, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw fail(.system(Errno(rawValue: errno)), "cannot open the extracted archive") }
        defer { close(rootFD) }
        if FileSystem.exists(rootFD, Array("index.json".utf8)) && FileSystem.exists(rootFD, Array("oci-layout".utf8)) {
            return Extracted(layout: OCIImageLayout(path: contents), reference: reference, tag: nil)
        }
        guard let data = try readSmallFile(rootFD, "manifest.json", archive: archive) else {
            throw fail(.notAnImage, "not a docker save archive or OCI layout (no manifest.json or index.json)")
        }
        let entries: [LegacyEntry]
        do throws(CanonicalJSON.DocumentError) { entries = try CanonicalJSON.decode([LegacyEntry].self, from: data) } catch {
            throw fail(.invalidDocument, "manifest.json: \(error.reason)")
        }
        guard !entries.isEmpty else { throw fail(.invalidDocument, "manifest.json lists no images") }
        let layoutPath = directory + "/layout"
        for dir in [layoutPath, layoutPath + "/blobs", layoutPath + "/blobs/sha256"] where mkdir(dir, 0o755) != 0 {
            throw fail(.system(Errno(rawValue: errno)), "cannot create \(dir)")
        }
        let layoutFD = open(layoutPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard layoutFD >= 0 else { throw fail(.system(Errno(rawValue: errno)), "cannot open \(layoutPath)") }
        defer { close(layoutFD) }

        var manifests = [Descriptor]()
        for entry in entries {
            let config = try linkIntoBlobs(entry.config, from: rootFD, into: layoutFD, archive: archive)
            var layers = [Descriptor]()
            for name in entry.layers {
                let layer = try linkIntoBlobs(name, from: rootFD, into: layoutFD, archive: archive)
                layers.append(Descriptor(mediaType: MediaType.ociLayer, digest: layer.digest, size: layer.size))
            }
            let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: config.digest, size: config.size),
                                         layers: layers)
            let bytes = CanonicalJSON.encode(manifest)
            let digest = Digest.sha256(of: bytes)
            try writeFile(layoutFD, OCIImageLayout.blobName(digest), bytes, archive: archive)
            let tags = entry.repoTags ?? []
            for tag in tags.isEmpty ? [""] : tags {
                manifests.append(Descriptor(mediaType: MediaType.ociManifest, digest: digest, size: Int64(bytes.count),
                                            annotations: tag.isEmpty ? nil : [Annotation.referenceName: tagPart(tag)]))
            }
        }
        try writeFile(layoutFD, Array("index.json".utf8), CanonicalJSON.encode(ImageIndex(manifests: manifests)), archive: archive)
        try writeFile(layoutFD, Array("oci-layout".utf8), Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), archive: archive)
        let firstTag = entries[0].repoTags?.first
        return Extracted(layout: OCIImageLayout(path: layoutPath), reference: reference ?? firstTag.map(tagPart),
                         tag: reference == nil ? firstTag : nil)
    }

    /// `busybox:latest` → `latest`; `registry:5000/x:1` → `1`; a name without a tag → itself.
    public static func tagPart(_ tag: String) -> String {
        let last = tag.split(separator: "/").last.map(String.init) ?? tag
        guard let colon = last.lastIndex(of: ":") else { return tag }
        return String(last[last.index(after: colon)...])
    }

    /// Hashes the file `name` (opened inside the extracted dir: a regular file, reached only
    /// through links that stay inside) and links it into the layout's blobs under its digest.
    private static func linkIntoBlobs(_ name: String, from rootFD: Int32, into layoutFD: Int32,
                                      archive: String) throws(ImageError) -> (digest: Digest, size: Int64) {
        guard let path = EntryPath.clean(name), !path.isRoot else {
            throw ImageError(.pathEscapes, source: archive, "entry \(name.debugDescription): manifest.json names a file outside the archive")
        }
        let fd = FileSystem.openInRoot(rootFD, path.bytes, flags: O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            throw ImageError(.missingBlob, source: archive, "entry \(name.debugDescription): manifest.json names a file the archive does not have")
        }
        defer { close(fd) }
        guard let st = FileSystem.attributes(of: fd), FileSystem.isRegularFile(st) else {
            throw ImageError(.invalidDocument, source: archive, "entry \(name.debugDescription): manifest.json names something that is not a regular file")
        }
        var hasher = SHA256Hasher()
        var size: Int64 = 0
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer, 1 << 20)
            if n < 0 { if errno == EINTR { continue }; throw ImageError(.system(Errno(rawValue: errno)), source: archive, "cannot read \(name)") }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(start: buffer, count: n))
            size += Int64(n)
        }
        let digest = hasher.finalize()
        // The file's real place, which openat2 kept inside the extracted dir; linked, not moved,
        // since several images may name it.
        let target = OCIImageLayout.blobName(digest)
        if !FileSystem.exists(layoutFD, target) {
            let source = FileSystem.path(of: fd)
            let rc = withCString(source) { s in withCString(target) { linkat(AT_FDCWD, s, layoutFD, $0, 0) } }
            guard rc == 0 else { throw ImageError(.system(Errno(rawValue: errno)), source: archive, "cannot move \(name) into blobs/") }
        }
        return (digest, size)
    }

    private static func readSmallFile(_ rootFD: Int32, _ name: String, archive: String) throws(ImageError) -> [UInt8]? {
        let fd = FileSystem.openInRoot(rootFD, Array(name.utf8), flags: O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let st = FileSystem.attributes(of: fd), FileSystem.isRegularFile(st), Int64(st.st_size) <= OCIImageLayout.maximumDocumentSize else {
            throw ImageError(.invalidDocument, source: archive, "\(name) is not a regular file of at most \(OCIImageLayout.maximumDocumentSize) bytes")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ImageError(.system(Errno(rawValue: errno)), source: archive, "cannot read \(name)") }
            done += n
        }
        return bytes
    }

    /// Writes a file of the layout being made (a dir of our own).
    private static func writeFile(_ layoutFD: Int32, _ name: [UInt8], _ bytes: [UInt8], archive: String) throws(ImageError) {
        let fd = withCString(name) { openat(layoutFD, $0, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { throw ImageError(.system(Errno(rawValue: errno)), source: archive, "cannot write \(String(decoding: name, as: UTF8.self))") }
        defer { close(fd) }
        do throws(Errno) {
            if !bytes.isEmpty { try withBytes(bytes) { (b) throws(Errno) in try DataCopy.writeAll(fd, b.baseAddress!, b.count, at: nil) } }
        } catch {
            throw ImageError(.system(error), source: archive, "cannot write \(String(decoding: name, as: UTF8.self))")
        }
    }
}
