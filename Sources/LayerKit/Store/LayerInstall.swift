import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The steps every import shares to unpack a layer into staging and install it: the apply
/// options the store uses, the staged diff dir, the rename into place and the layer record.
/// (`importLayer` for layers read from files, `StreamingImport` for layers arriving as streams.)
extension LayerStore {
    /// How the store applies a layer on top of `lowerDirs` (topmost first): overlay format in the
    /// store's xattr namespace, with the store's decoder, apply workers and logger.
    func layerApplyOptions(lowerDirs: [String]) -> ApplyOptions {
        var options = ApplyOptions(format: .overlay(overlayNamespace), lowerDirs: lowerDirs)
        options.gzipDecoder = configuration.gzipDecoder
        options.applyWorkers = configuration.applyWorkers
        options.logger = configuration.logger
        return options
    }

    /// Creates the empty diff dir `diff` of a staged layer and opens it. The merged root is the
    /// top layer's root: it keeps what the layer below (`below`, its diff dir) says of `/` unless
    /// the new layer names `./` itself (as a plain unpack keeps it).
    static func makeStagedDiff(_ diff: String, below: String?) throws(StoreError) -> Int32 {
        guard mkdir(diff, 0o755) == 0, chmod(diff, 0o755) == 0 else { throw .lastErrno(path: diff, "cannot create directory") }
        if let below { copyRootMetadata(from: below, to: diff) }
        let diffFD = open(diff, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard diffFD >= 0 else { throw .lastErrno(path: diff, "cannot open") }
        return diffFD
    }

    /// The disk use of a layer just applied into `diff`: counted while it was written, measured
    /// only when the apply could not count it.
    static func stagedLayerSize(_ summary: LayerSummary, diff: String) throws(StoreError) -> Int64 {
        if let counted = summary.allocatedBytes { return counted }
        return try DiskUsage.of(diff)
    }

    /// Renames a staged layer dir to `layerDir`, never over an existing one.
    static func renameStagedLayer(_ staging: String, to layerDir: String) throws(StoreError) {
        if lk_renameat2(AT_FDCWD, staging, AT_FDCWD, layerDir, UInt32(LK_RENAME_NOREPLACE)) != 0 {
            // File systems without RENAME_NOREPLACE: the target was checked absent under the lock.
            guard errno == EINVAL, rename(staging, layerDir) == 0 else {
                throw .lastErrno(path: layerDir, "cannot rename the staging dir \(staging) into place")
            }
        }
    }

    /// Records an installed layer, or (`existing`: its record outlived its dir) its new size.
    func recordLayer(_ chainID: Digest, diffID: Digest, descriptor: Descriptor, parent: Digest?, link: String,
                     size: Int64, existing: Bool) throws(StoreError) {
        if existing {
            try execute("UPDATE layers SET size = ? WHERE chain_id = ?", [size, chainID])
        } else {
            try execute("""
                INSERT INTO layers (chain_id, diff_id, blob_digest, blob_size, media_type, parent, link, size, created)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [chainID, diffID, descriptor.digest, descriptor.size, descriptor.mediaType, parent, link, size, Self.now()])
        }
    }
}
