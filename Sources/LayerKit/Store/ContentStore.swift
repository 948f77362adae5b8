import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The store's content dir, `ROOT/blobs/sha256/<hex>`: the blobs of imported images (manifests,
/// configs, layer blobs as they were stored) and of committed ones, kept so an image can be
/// exported again byte for byte. A blob is written under a temporary name, synced, and renamed
/// to its digest; a blob present under its digest is complete.
extension LayerStore {
    /// Whether the content dir has this blob.
    public func hasBlob(_ digest: Digest) -> Bool { access(paths.blob(digest), F_OK) == 0 }

    /// The bytes of a (small) blob: a manifest or config.
    public func readBlob(_ digest: Digest) throws(StoreError) -> [UInt8] {
        let path = paths.blob(digest)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StoreError(.notFound, path: path, "blob \(digest) is not in the store")
        }
        let bytes = [UInt8](data)
        guard Digest.sha256(of: bytes) == digest else { throw StoreError(.incompatible, path: path, "blob does not hash to \(digest)") }
        return bytes
    }

    /// Copies the file at `source` into the content dir as `digest`, unless it is there already.
    ///
    /// - Parameter verified: the caller has just hashed `source` (an unpack checked it): the copy
    ///   is made in the kernel (copy_file_range) without hashing again, and not synced on its own
    ///   (the caller's syncfs covers it). Otherwise the copy is hashed on the way, refused if it
    ///   does not match, and synced.
    func storeBlob(copying source: String, digest: Digest, verified: Bool = false) throws(StoreError) {
        guard !hasBlob(digest) else { return }
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw .lastErrno(path: source, "cannot open blob") }
        defer { close(input) }
        if verified {
            try writeBlob(digest, sync: false) { (fd) throws(StoreError) in
                var copied = false
                while true {
                    let n = lk_copy_file_range(input, fd, 1 << 30)
                    if n > 0 { copied = true; continue }
                    if n == 0 { return }
                    // No in-kernel copy between these file systems: plain reads and writes.
                    guard !copied, errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP else {
                        throw .lastErrno(path: source, "cannot copy blob")
                    }
                    break
                }
                try Self.copyByReading(input, to: fd, path: source)
            }
            return
        }
        try writeBlob(digest) { (fd) throws(StoreError) in
            var hasher = SHA256Hasher()
            let size = 1 << 20
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
            defer { buffer.deallocate() }
            while true {
                let n = read(input, buffer, size)
                if n == 0 { break }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .lastErrno(path: source, "cannot read blob")
                }
                hasher.update(UnsafeRawBufferPointer(start: buffer, count: n))
                guard write(fd, buffer, n) == n else { throw .lastErrno(path: paths.blob(digest), "cannot write blob") }
            }
            let actual = hasher.finalize()
            guard actual == digest else {
                throw StoreError(.layer(.digestMismatch), path: source, "digest mismatch: expected \(digest), got \(actual)")
            }
        }
    }

    /// Moves a file on the store's file system (a committed layer's blob) into the content dir.
    func storeBlob(moving source: String, digest: Digest) throws(StoreError) {
        guard !hasBlob(digest) else { unlink(source); return }
        let fd = open(source, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: source, "cannot open blob") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .lastErrno(path: source, "cannot sync blob") }
        guard rename(source, paths.blob(digest)) == 0 else { throw .lastErrno(path: paths.blob(digest), "cannot move blob into place") }
        try Durability.syncDirectory(paths.blobsDir)
    }

    /// Writes bytes (a manifest or config) as a blob and returns their digest.
    @discardableResult
    func storeBlob(bytes: [UInt8]) throws(StoreError) -> Digest {
        let digest = Digest.sha256(of: bytes)
        guard !hasBlob(digest) else { return digest }
        try writeBlob(digest) { (fd) throws(StoreError) in
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == bytes.count else { throw .lastErrno(path: paths.blob(digest), "cannot write blob") }
        }
        return digest
    }

    private func writeBlob(_ digest: Digest, sync: Bool = true, _ fill: (Int32) throws(StoreError) -> Void) throws(StoreError) {
        var template = Array("\(paths.blobsDir)/.tmp-\(digest.hex.prefix(12))-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw .lastErrno(path: paths.blobsDir, "cannot create blob") }
        let temp = String(cString: template)
        var done = false
        defer {
            close(fd)
            if !done { unlink(temp) }
        }
        fchmod(fd, 0o644)
        try fill(fd)
        guard !sync || fsync(fd) == 0 else { throw .lastErrno(path: temp, "cannot sync blob") }
        guard rename(temp, paths.blob(digest)) == 0 else { throw .lastErrno(path: paths.blob(digest), "cannot rename blob into place") }
        done = true
        if sync { try Durability.syncDirectory(paths.blobsDir) }
    }

    static func copyByReading(_ input: Int32, to output: Int32, path: String) throws(StoreError) {
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, size)
            if n == 0 { return }
            if n < 0 {
                if errno == EINTR { continue }
                throw .lastErrno(path: path, "cannot read blob")
            }
            guard write(output, buffer, n) == n else { throw .lastErrno(path: path, "cannot write blob copy") }
        }
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
