import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`), as written by skopeo,
/// umoci and buildah.
///
/// A layout may come from anyone, so it is read the way layers are: every file is opened inside
/// the layout dir (`openat2(RESOLVE_IN_ROOT)`: a symlink can only lead to another file of the
/// layout), must be a regular file, and is read up to the size its descriptor gives and no
/// further; a blob of another size, or whose bytes do not hash to its digest, is refused without
/// reporting what it hashed to.
public struct OCIImageLayout: Sendable {
    public let path: String

    /// The largest `index.json`, index or manifest read (containerd's limit for manifests).
    public static let maximumDocumentSize: Int64 = 4 << 20
    /// The largest config read.
    public static let maximumConfigSize: Int64 = 16 << 20

    public init(path: String) { self.path = path }

    /// Splits `LAYOUT[:REF]` (the form skopeo and umoci take).
    public static func parse(_ spec: String) -> (layout: String, reference: String?) {
        if let colon = spec.lastIndex(of: ":"), !spec[spec.index(after: colon)...].contains("/") {
            let ref = String(spec[spec.index(after: colon)...])
            return (String(spec[..<colon]), ref.isEmpty ? nil : ref)
        }
        return (spec, nil)
    }

    /// `blobs/sha256/<hex>`, relative to the layout.
    static func blobName(_ digest: Digest) -> [UInt8] { Array("blobs/\(digest.algorithm)/\(digest.hex)".utf8) }

    // MARK: Reading files

    private func error(_ kind: ImageError.Kind, _ reason: String) -> ImageError { ImageError(kind, source: path, reason) }

    /// Opens the layout dir.
    private func openRoot() throws(ImageError) -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = Errno(rawValue: errno)
            if e == .noSuchFileOrDirectory || e == .notDirectory { throw error(.notAnImage, "not an OCI image layout (\(e.description))") }
            throw error(.system(e), "cannot open: \(e.description)")
        }
        return fd
    }

    /// Opens a regular file inside the layout; nil when it does not exist.
    private func openFile(_ rootFD: Int32, _ name: [UInt8]) throws(ImageError) -> Int32? {
        let fd = FileSystem.openInRoot(rootFD, name, flags: O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            let e = Errno(rawValue: errno)
            if e == .noSuchFileOrDirectory { return nil }
            if e == .tooManySymbolicLinkLevels { throw error(.pathEscapes, "\(String(decoding: name, as: UTF8.self)): too many levels of symbolic links") }
            throw error(.system(e), "cannot open \(String(decoding: name, as: UTF8.self)): \(e.description)")
        }
        guard let st = FileSystem.attributes(of: fd), FileSystem.isRegularFile(st) else {
            close(fd)
            throw error(.invalidDocument, "\(String(decoding: name, as: UTF8.self)) is not a regular file")
        }
        return fd
    }

    /// Reads a whole small file of the layout, refusing one larger than `limit`.
    private func readFile(_ rootFD: Int32, _ name: String, limit: Int64) throws(ImageError) -> [UInt8]? {
        guard let fd = try openFile(rootFD, Array(name.utf8)) else { return nil }
        defer { close(fd) }
        return try readBounded(fd, limit: limit, what: name)
    }

    /// Reads at most `limit` bytes; more is an error.
    private func readBounded(_ fd: Int32, limit: Int64, what: String) throws(ImageError) -> [UInt8] {
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw error(.system(Errno(rawValue: errno)), "cannot read \(what)") }
            if n == 0 { return bytes }
            bytes += buffer[..<n]
            if Int64(bytes.count) > limit { throw error(.invalidDocument, "\(what) is larger than \(limit) bytes") }
        }
    }

    /// Opens the blob of `descriptor` for reading: inside the layout, a regular file of exactly
    /// the descriptor's size. The caller owns the fd.
    public func openBlob(_ descriptor: Descriptor) throws(ImageError) -> Int32 {
        guard descriptor.size >= 0 else { throw error(.invalidDocument, "blob \(descriptor.digest): negative size \(descriptor.size)") }
        let rootFD = try openRoot()
        defer { close(rootFD) }
        guard let fd = try openFile(rootFD, Self.blobName(descriptor.digest)) else {
            throw error(.missingBlob, "blob \(descriptor.digest) is missing")
        }
        guard let st = FileSystem.attributes(of: fd), Int64(st.st_size) == descriptor.size else {
            close(fd)
            throw error(.blobMismatch, "blob \(descriptor.digest) does not have its descriptor's size (\(descriptor.size) bytes)")
        }
        return fd
    }

    /// Reads a small blob (index, manifest, config), checking its size and digest.
    public func readBlob(_ descriptor: Descriptor, limit: Int64 = OCIImageLayout.maximumDocumentSize) throws(ImageError) -> [UInt8] {
        guard descriptor.size <= limit else {
            throw error(.invalidDocument, "blob \(descriptor.digest) is larger (\(descriptor.size) bytes) than the \(limit) bytes allowed")
        }
        let fd = try openBlob(descriptor)
        defer { close(fd) }
        let bytes = try readBounded(fd, limit: descriptor.size, what: "blob \(descriptor.digest)")
        guard Int64(bytes.count) == descriptor.size, Digest.sha256(of: bytes) == descriptor.digest else {
            throw error(.blobMismatch, "blob \(descriptor.digest) does not match its digest")
        }
        return bytes
    }

    private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], _ what: String) throws(ImageError) -> T {
        do throws(CanonicalJSON.DocumentError) { return try CanonicalJSON.decode(type, from: bytes) } catch {
            throw self.error(.invalidDocument, "\(what): \(error.reason)")
        }
    }

    // MARK: Resolving

    /// The layout's `index.json`.
    public func index() throws(ImageError) -> ImageIndex {
        let rootFD = try openRoot()
        defer { close(rootFD) }
        guard let layoutData = try readFile(rootFD, "oci-layout", limit: 1 << 16) else {
            throw error(.notAnImage, "not an OCI image layout (no oci-layout file)")
        }
        struct LayoutFile: Decodable { var imageLayoutVersion: String }
        let version = try decode(LayoutFile.self, layoutData, "oci-layout").imageLayoutVersion
        guard version.hasPrefix("1.") else { throw error(.unsupported, "unsupported imageLayoutVersion \(version)") }
        guard let indexData = try readFile(rootFD, "index.json", limit: Self.maximumDocumentSize) else {
            throw error(.notAnImage, "missing index.json")
        }
        return try decode(ImageIndex.self, indexData, "index.json")
    }

    /// Finds the manifest named `reference` (annotation `org.opencontainers.image.ref.name`);
    /// without one, the only manifest, or the one tagged `latest`. An index inside is followed to
    /// the manifest for `platform` (this machine's by default). Every blob read on the way is
    /// checked against its digest and size.
    public func resolve(_ reference: String?, platform: Platform = .host) throws(ImageError) -> ResolvedImage {
        let index = try index()
        let refKey = Annotation.referenceName
        var candidates = index.manifests
        let known = index.manifests.compactMap { $0.annotations?[refKey] }
        if let reference {
            candidates = candidates.filter { $0.annotations?[refKey] == reference }
            guard !candidates.isEmpty else {
                throw error(.referenceNotFound, "no image tagged \"\(reference)\" (tags: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            }
        } else if candidates.count > 1 {
            let latest = candidates.filter { $0.annotations?[refKey] == "latest" }
            guard latest.count == 1 else {
                throw error(.referenceNotFound, "the layout holds \(candidates.count) images: name one with LAYOUT:REF (tags: \(known.joined(separator: ", ")))")
            }
            candidates = latest
        }
        guard var descriptor = candidates.first else { throw error(.invalidDocument, "index.json lists no manifests") }

        // Follow nested indexes to the manifest for this platform.
        var depth = 0
        while MediaType.isIndex(descriptor.mediaType) {
            depth += 1
            guard depth < 8 else { throw error(.invalidDocument, "nested indexes too deep") }
            let nested = try decode(ImageIndex.self, try readBlob(descriptor), "index \(descriptor.digest)")
            guard let pick = nested.manifests.first(where: { $0.platform.map(platform.accepts) ?? false })
                    ?? (nested.manifests.count == 1 ? nested.manifests.first : nil) else {
                throw error(.unsupported, "index \(descriptor.digest) has no manifest for \(platform)")
            }
            descriptor = pick
        }
        if MediaType.dockerSchema1Manifests.contains(descriptor.mediaType) {
            throw error(.unsupported, "manifest \(descriptor.digest) is a Docker schema 1 manifest, which is not supported")
        }

        let manifestBytes = try readBlob(descriptor)
        let manifest = try decode(ImageManifest.self, manifestBytes, "manifest \(descriptor.digest)")
        let configBytes = try readBlob(manifest.config, limit: Self.maximumConfigSize)
        let config = try decode(ImageConfig.self, configBytes, "config \(manifest.config.digest)")
        guard config.rootfs.type == "layers" else { throw error(.invalidDocument, "config rootfs.type is \"\(config.rootfs.type)\", not \"layers\"") }
        guard config.rootfs.diffIDs.count == manifest.layers.count else {
            throw error(.invalidDocument, "the manifest lists \(manifest.layers.count) layers but the config has \(config.rootfs.diffIDs.count) diff_ids")
        }
        var layers = [ImageLayer]()
        for (layer, diffID) in zip(manifest.layers, config.rootfs.diffIDs) {
            guard MediaType.readableLayers.contains(layer.mediaType) else {
                throw error(.unsupported, "layer \(layer.digest): unsupported media type \(layer.mediaType)")
            }
            guard layer.size >= 0 else { throw error(.invalidDocument, "layer \(layer.digest): negative size \(layer.size)") }
            layers.append(ImageLayer(descriptor: layer, diffID: diffID, source: .layoutBlob(self, layer)))
        }
        return ResolvedImage(reference: reference ?? descriptor.annotations?[refKey], manifestDescriptor: descriptor,
                             manifest: manifest, manifestBytes: manifestBytes, config: config, configBytes: configBytes, layers: layers)
    }
}
