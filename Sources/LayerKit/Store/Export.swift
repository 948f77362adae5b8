import SystemPackage
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
    /// Writes image `name` into the OCI layout at `layoutPath` (created if missing, its parent
    /// must exist; an existing layout keeps its other images) tagged `reference` (default: the
    /// name's tag, or the name).
    ///
    /// Blobs are copied from the content dir, each under a temporary name then renamed, and
    /// `index.json` is replaced last, atomically: an interrupted export leaves the layout as it was
    /// plus some complete blobs. Every file is written inside the layout dir (a symlink in an
    /// existing layout cannot send a write elsewhere). With `gzipLayers`, zstd layers are rewritten
    /// as gzip (same diffIDs, so the config is unchanged; the manifest is new) for tools that
    /// cannot read zstd.
    public func exportImage(_ name: String, to layoutPath: String, reference: String? = nil,
                            gzipLayers: Bool = false) throws(StoreError) -> ExportResult {
        try exportImage(name, to: layoutPath, reference: reference, gzipLayers: gzipLayers, cancellation: nil)
    }

    /// `exportImage` off the caller's thread; cancelling the calling Task stops it between blobs.
    public func exportImage(_ name: String, to layoutPath: String, reference: String? = nil,
                            gzipLayers: Bool = false) async throws(StoreError) -> ExportResult {
        try await BlockingWork.run("layerkit-export") { (cancellation) throws(StoreError) -> ExportResult in
            try self.exportImage(name, to: layoutPath, reference: reference, gzipLayers: gzipLayers, cancellation: cancellation)
        }
    }

    /// Whether `reference` can tag a manifest in a layout: the characters of a tag or digest.
    static func isValidReference(_ reference: String) -> Bool {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@+")
        return !reference.isEmpty && reference.count <= 255 && reference.allSatisfy(allowed.contains)
            && reference.first != "." && reference.first != "-"
    }

    func exportImage(_ name: String, to layoutPath: String, reference: String?, gzipLayers: Bool,
                     cancellation: CancellationFlag?) throws(StoreError) -> ExportResult {
        guard let image = try image(named: name) else { throw StoreError(.notFound, "no image named \(name.debugDescription)") }
        let reference = reference ?? DockerArchive.tagPart(name)
        guard Self.isValidReference(reference) else {
            throw StoreError(.invalidArgument, "\(reference.debugDescription) is not a valid reference (letters, digits, '.', '_', '-', ':', '@', '+')")
        }
        let manifest = try document(ImageManifest.self, image.manifestDigest)
        let diffIDs = try document(ImageConfig.self, manifest.config.digest).rootfs.diffIDs

        let layout = try OutputLayout(path: layoutPath)
        var written = 0, recompressed = 0
        if try layout.add(copying: paths.blob(manifest.config.digest), as: manifest.config.digest) { written += 1 }
        var layers = manifest.layers
        for (i, layer) in manifest.layers.enumerated() {
            if cancellation?.isCancelled == true { throw StoreError.cancelled }
            if gzipLayers && layer.mediaType.hasSuffix("+zstd") {
                let result = try layout.addRecompressed(paths.blob(layer.digest), expectedDiffID: i < diffIDs.count ? diffIDs[i] : nil)
                layers[i].mediaType = String(layer.mediaType.dropLast("+zstd".count)) + "+gzip"
                layers[i].digest = result.descriptor.digest
                layers[i].size = result.descriptor.size
                recompressed += 1
                written += 1
            } else if try layout.add(copying: paths.blob(layer.digest), as: layer.digest) {
                written += 1
            }
        }
        // The manifest as stored, byte for byte, unless a layer was rewritten.
        var manifestBytes = try readBlob(image.manifestDigest)
        if recompressed > 0 {
            var rewritten = manifest
            rewritten.layers = layers
            manifestBytes = CanonicalJSON.encode(rewritten)
        }
        let manifestDigest = Digest.sha256(of: manifestBytes)
        if try layout.add(bytes: manifestBytes, as: manifestDigest) { written += 1 }
        let descriptor = Descriptor(mediaType: manifest.mediaType ?? MediaType.ociManifest, digest: manifestDigest,
                                    size: Int64(manifestBytes.count), annotations: [Annotation.referenceName: reference])

        // index.json: this reference replaced, everything else kept as it was.
        var index = try layout.index() ?? ImageIndex(manifests: [])
        index.manifests.removeAll { $0.annotations?[Annotation.referenceName] == reference }
        index.manifests.append(descriptor)
        try layout.replace("index.json", with: CanonicalJSON.encode(index))
        return ExportResult(layout: layoutPath, reference: reference, manifest: descriptor, blobsWritten: written,
                            layersRecompressed: recompressed)
    }
}

/// An OCI layout being written to: every file created inside its dir (`openat2(RESOLVE_IN_ROOT)`),
/// under a temporary name, synced and renamed into place.
struct OutputLayout {
    let path: String
    private let rootFD: FileDescriptorBox

    /// Opens (making it, and `blobs/sha256` in it) the layout dir; its parent must exist.
    init(path: String) throws(StoreError) {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard FileSystem.isDirectory(st) else {
                throw StoreError(.invalidArgument, path: path, "exists and is not a directory: an OCI layout is a directory")
            }
        } else if errno == ENOENT {
            let parent = FileSystem.split(path).dir
            guard mkdir(path, 0o755) == 0 else {
                if errno == ENOENT { throw StoreError(.system(.noSuchFileOrDirectory), path: path, "cannot create the layout: \(parent) does not exist") }
                throw .lastErrno(path: path, "cannot create the layout")
            }
        } else {
            throw .lastErrno(path: path, "cannot open the layout")
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: path, "cannot open the layout") }
        self.path = path
        self.rootFD = FileDescriptorBox(fd)
        for dir in ["blobs", "blobs/sha256"] {
            let made = withCString(Array(dir.utf8)) { mkdirat(fd, $0, 0o755) }
            guard made == 0 || errno == EEXIST else { throw .lastErrno(path: path + "/" + dir, "cannot create") }
        }
        if !FileSystem.exists(fd, Array("oci-layout".utf8)) {
            try replace("oci-layout", with: Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        }
    }

    /// The layout's `index.json`, if it has one.
    func index() throws(StoreError) -> ImageIndex? {
        let fd = FileSystem.openInRoot(rootFD.fd, Array("index.json".utf8), flags: O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw .lastErrno(path: path + "/index.json", "cannot open")
        }
        defer { close(fd) }
        guard let st = FileSystem.attributes(of: fd), FileSystem.isRegularFile(st), Int64(st.st_size) <= OCIImageLayout.maximumDocumentSize else {
            throw StoreError(.incompatible, path: path + "/index.json", "not a regular file of at most \(OCIImageLayout.maximumDocumentSize) bytes")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .lastErrno(path: path + "/index.json", "cannot read") }
            done += n
        }
        do throws(CanonicalJSON.DocumentError) { return try CanonicalJSON.decode(ImageIndex.self, from: bytes) } catch {
            throw StoreError(.incompatible, path: path + "/index.json", "not an image index: \(error.reason)")
        }
    }

    /// Copies a blob file in unless the layout has the digest; true when it was copied.
    func add(copying source: String, as digest: Digest) throws(StoreError) -> Bool {
        let name = OCIImageLayout.blobName(digest)
        guard !FileSystem.exists(rootFD.fd, name) else { return false }
        let input = open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else { throw .lastErrno(path: source, "cannot open") }
        defer { close(input) }
        try write(name) { (fd) throws(StoreError) in
            do throws(Errno) { try DataCopy.copyAll(from: input, to: fd) } catch { throw .system(error, path: source, "cannot copy") }
        }
        return true
    }

    /// Writes bytes as a blob unless the layout has the digest; true when written.
    func add(bytes: [UInt8], as digest: Digest) throws(StoreError) -> Bool {
        let name = OCIImageLayout.blobName(digest)
        guard !FileSystem.exists(rootFD.fd, name) else { return false }
        try write(name) { (fd) throws(StoreError) in try Self.writeBytes(fd, bytes, path: path) }
        return true
    }

    /// Writes a zstd layer as gzip (its tar checked against `expectedDiffID`) and returns it.
    func addRecompressed(_ source: String, expectedDiffID: Digest?) throws(StoreError) -> DiffResult {
        var result: DiffResult?
        let temp = try write(nil) { (fd) throws(StoreError) in
            do throws(LayerError) {
                result = try LayerRecompressor.recompress(.path(source), to: fd, compression: .gzip, expectedDiffID: expectedDiffID)
            } catch { throw StoreError(error) }
        }
        guard let result else { throw StoreError(.incompatible, path: source, "nothing was written") }
        let name = OCIImageLayout.blobName(result.descriptor.digest)
        let rc = withCString(temp) { t in withCString(name) { renameat(rootFD.fd, t, rootFD.fd, $0) } }
        guard rc == 0 else {
            let error = StoreError.lastErrno(path: path + "/" + String(decoding: name, as: UTF8.self), "cannot rename into place")
            withCString(temp) { _ = unlinkat(rootFD.fd, $0, 0) }
            throw error
        }
        return result
    }

    /// Replaces a file of the layout (`index.json`, `oci-layout`) atomically.
    func replace(_ name: String, with bytes: [UInt8]) throws(StoreError) {
        try write(Array(name.utf8)) { (fd) throws(StoreError) in try Self.writeBytes(fd, bytes, path: path) }
    }

    /// Writes a file under a temporary name in `blobs/sha256` (or the layout root), fsyncs it, and
    /// renames it to `name` (if given). Returns the temporary name (relative to the layout).
    @discardableResult
    private func write(_ name: [UInt8]?, _ fill: (Int32) throws(StoreError) -> Void) throws(StoreError) -> [UInt8] {
        let dir = name.map { FileSystem.split(String(decoding: $0, as: UTF8.self)).dir } ?? "blobs/sha256"
        let temp = Array("\(dir == "." ? "" : dir + "/").tmp-layertool-\(getpid())-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let fd = FileSystem.openInRoot(rootFD.fd, temp, flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o644)
        guard fd >= 0 else { throw .lastErrno(path: path + "/" + String(decoding: temp, as: UTF8.self), "cannot create") }
        var done = false
        defer {
            close(fd)
            if !done { withCString(temp) { _ = unlinkat(rootFD.fd, $0, 0) } }
        }
        try fill(fd)
        guard fsync(fd) == 0 else { throw .lastErrno(path: path, "cannot sync") }
        if let name {
            let rc = withCString(temp) { t in withCString(name) { renameat(rootFD.fd, t, rootFD.fd, $0) } }
            guard rc == 0 else { throw .lastErrno(path: path + "/" + String(decoding: name, as: UTF8.self), "cannot rename into place") }
        }
        done = true
        return temp
    }

    private static func writeBytes(_ fd: Int32, _ bytes: [UInt8], path: String) throws(StoreError) {
        guard !bytes.isEmpty else { return }
        do throws(Errno) { try withBytes(bytes) { (b) throws(Errno) in try DataCopy.writeAll(fd, b.baseAddress!, b.count, at: nil) } } catch {
            throw .system(error, path: path, "cannot write")
        }
    }
}

/// Closes its fd when the last copy goes.
final class FileDescriptorBox {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}
