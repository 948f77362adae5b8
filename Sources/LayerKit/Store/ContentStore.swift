import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A blob being written into the content dir: a temporary file beside the blobs, renamed to its
/// digest only once its bytes are known to hash to it. Discarded (unlinked) unless committed.
final class PendingBlob {
    let fd: Int32
    let temporaryPath: String
    private let blobsDir: String
    private var finished = false

    init(in blobsDir: String, for digest: Digest?) throws(StoreError) {
        var template = Array("\(blobsDir)/.tmp-\(digest.map { String($0.hex.prefix(12)) } ?? "new")-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw .lastErrno(path: blobsDir, "cannot create blob") }
        fchmod(fd, 0o644)
        self.fd = fd
        self.temporaryPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        self.blobsDir = blobsDir
    }

    deinit {
        close(fd)
        if !finished { unlink(temporaryPath) }
    }

    /// Renames the file to `blobs/sha256/<digest>` (unless a blob of that digest is there already).
    /// With `sync`, it is fsynced first and the dir after; without, the caller syncs the file system.
    func commit(as digest: Digest, sync: Bool) throws(StoreError) {
        let target = blobsDir + "/" + digest.hex
        if sync { guard fsync(fd) == 0 else { throw .lastErrno(path: temporaryPath, "cannot sync blob") } }
        guard rename(temporaryPath, target) == 0 else { throw .lastErrno(path: target, "cannot rename blob into place") }
        finished = true
        if sync { try Durability.syncDirectory(blobsDir) }
    }
}

/// The store's content dir, `ROOT/blobs/sha256/<hex>`: the blobs of imported images (manifests,
/// configs, layer blobs as they were stored) and of committed ones, kept so an image can be
/// exported again byte for byte. A blob is written under a temporary name and renamed to its
/// digest once its bytes are known to hash to it: a blob present under its digest is complete
/// and right.
extension LayerStore {
    /// Whether the content dir has this blob.
    public func hasBlob(_ digest: Digest) -> Bool { access(paths.blob(digest), F_OK) == 0 }

    /// The largest manifest or config `readBlob` reads.
    static let maximumDocumentSize = OCIImageLayout.maximumConfigSize

    /// The bytes of a (small) blob: a manifest or config, checked against its digest.
    public func readBlob(_ digest: Digest) throws(StoreError) -> [UInt8] {
        let path = paths.blob(digest)
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw StoreError(.notFound, path: path, "blob \(digest) is not in the store") }
            throw .lastErrno(path: path, "cannot open blob")
        }
        defer { close(fd) }
        guard let st = FileSystem.attributes(of: fd), FileSystem.isRegularFile(st), Int64(st.st_size) <= Self.maximumDocumentSize else {
            throw StoreError(.incompatible, path: path, "not a document blob (not a regular file, or larger than \(Self.maximumDocumentSize) bytes)")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .lastErrno(path: path, "cannot read blob") }
            done += n
        }
        guard Digest.sha256(of: bytes) == digest else { throw StoreError(.incompatible, path: path, "blob does not match its digest \(digest)") }
        return bytes
    }

    /// Copies the blob of `descriptor` from `source` into the content dir (unless it is there),
    /// hashing it on the way: a blob that does not match its digest and size is refused.
    func storeBlob(from source: LayerSource, _ descriptor: Descriptor) throws(StoreError) {
        guard !hasBlob(descriptor.digest) else { return }
        let blob = try PendingBlob(in: paths.blobsDir, for: descriptor.digest)
        var hasher = SHA256Hasher()
        var size: Int64 = 0
        do throws(LayerError) {
            try LayerPipeline.copyBlob(source, limit: descriptor.size) { (bytes) throws(LayerError) in
                hasher.update(bytes)
                size += Int64(bytes.count)
                do throws(Errno) { try DataCopy.writeAll(blob.fd, bytes.baseAddress!, bytes.count, at: nil) } catch {
                    throw LayerError(.system(error), "cannot write blob: \(error.description)")
                }
            }
        } catch { throw StoreError(error.inLayer(source.displayName)) }
        guard size == descriptor.size, hasher.finalize() == descriptor.digest else {
            throw StoreError(LayerError(.digestMismatch, layer: source.displayName, "digest mismatch: the blob does not match \(descriptor.digest)"))
        }
        try blob.commit(as: descriptor.digest, sync: true)
    }

    /// Writes bytes (a manifest or config) as a blob and returns their digest.
    @discardableResult
    func storeBlob(bytes: [UInt8]) throws(StoreError) -> Digest {
        let digest = Digest.sha256(of: bytes)
        guard !hasBlob(digest) else { return digest }
        let blob = try PendingBlob(in: paths.blobsDir, for: digest)
        do throws(Errno) {
            if !bytes.isEmpty { try withBytes(bytes) { (b) throws(Errno) in try DataCopy.writeAll(blob.fd, b.baseAddress!, b.count, at: nil) } }
        } catch { throw .system(error, path: blob.temporaryPath, "cannot write blob") }
        try blob.commit(as: digest, sync: true)
        return digest
    }

    /// Every blob some record needs: images' manifests and configs, the layers their manifests
    /// list, and layer records' blobs.
    func referencedBlobs() throws(StoreError) -> Set<Digest> {
        var live = Set<Digest>()
        for layer in try layers() { if let blob = layer.blobDigest { live.insert(blob) } }
        let rows = try database { db throws(DatabaseError) in
            try db.query("SELECT manifest_digest, config_digest FROM images", []) { (row) throws(DatabaseError) in
                (try row.digest(0), try row.digest(1))
            }
        }
        for (manifest, config) in rows {
            live.insert(manifest)
            live.insert(config)
            if let bytes = try? readBlob(manifest), let parsed = try? JSONDecoder().decode(ImageManifest.self, from: Data(bytes)) {
                for layer in parsed.layers { live.insert(layer.digest) }
            }
        }
        return live
    }

    /// Removes blobs no record needs (and temporary files); the caller holds the store lock
    /// exclusively. Returns the bytes freed.
    func collectBlobs() throws(StoreError) -> (count: Int, bytes: Int64) {
        let live = try referencedBlobs()
        var count = 0
        var bytes: Int64 = 0
        for name in try Self.entries(of: paths.blobsDir) {
            if let digest = try? Digest(parsing: "sha256:" + name), live.contains(digest) { continue }
            let path = paths.blobsDir + "/" + name
            var st = stat()
            if lstat(path, &st) == 0 { bytes += Int64(st.st_size) }
            if unlink(path) == 0 { count += 1 }
        }
        return (count, bytes)
    }
}
