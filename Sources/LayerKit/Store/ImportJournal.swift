import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The blobs a `StreamingImport` is about to add to the content dir, one digest a line, written
/// into its staging dir (and synced with it) before the first blob is renamed into place.
///
/// Blobs go into `blobs/sha256/` before the records that name them are written: a process that
/// dies between the two would leave blobs no record needs. The next idle open of the store reads
/// the journals left in `staging/` before it clears it, and removes the blobs they list that no
/// record names (a blob another image recorded meanwhile stays).
enum ImportJournal {
    static let fileName = "import-journal"
    /// More than any image's blob count needs (71 bytes a line).
    static let maximumSize = 1 << 20

    static func write(_ digests: [Digest], in directory: String) throws(StoreError) {
        try LayerStore.writeFile(directory + "/" + fileName, digests.map { $0.description + "\n" }.joined())
    }

    /// The digests a journal lists; lines that are not digests are skipped. Nil when there is no
    /// journal (or it cannot be read: a store dir is the store's own, but bounded all the same).
    static func read(in directory: String) -> [Digest]? {
        guard let bytes = FileSystem.readSmallRegularFile(atPath: directory + "/" + fileName, limit: maximumSize) else { return nil }
        return bytes.split(separator: UInt8(ascii: "\n")).compactMap { try? Digest(parsing: String(decoding: $0, as: UTF8.self)) }
    }
}

extension LayerStore {
    /// Removes the blobs that interrupted streaming imports added and no record names (see
    /// `ImportJournal`); returns their paths. Runs before the staging dirs are cleared; the
    /// caller holds the store lock exclusively.
    func removeBlobsOfInterruptedImports() throws(StoreError) -> [String] {
        var listed = [Digest]()
        for name in try Self.entries(of: paths.stagingDir) {
            listed += ImportJournal.read(in: paths.stagingDir + "/" + name) ?? []
        }
        guard !listed.isEmpty else { return [] }
        let live = try referencedBlobs()
        var removed = [String]()
        for digest in Set(listed) where !live.contains(digest) {
            let path = paths.blob(digest)
            if unlink(path) == 0 { removed.append(path) }
        }
        if !removed.isEmpty { try Durability.syncDirectory(paths.blobsDir) }
        return removed.sorted()
    }
}
