#if canImport(Glibc)
import Glibc
#endif

/// Putting containerd's snapshots right after a crash (part of the store's cleanup).
extension LayerStore {
    /// Finishes or undoes what a crash interrupted, and returns what it did: a commit whose records
    /// were written but whose upper dir was not yet moved into its layer is moved now; a
    /// `ROOT/snapshots/<id>` dir no record names (a create that did not get its record, a remove
    /// whose record went first) is removed. The caller holds the store lock: exclusively (the
    /// store's cleanup), or shared from the one snapshot server (`cleanUpSnapshots`).
    func recoverSnapshots() throws(StoreError) -> [String] {
        try ensureSnapshotsDirectory()
        var repairs = [String]()
        let records: [StoredSnapshot]
        do throws(SnapshotError) { records = try snapshots() } catch {
            throw error.storeError ?? StoreError(.incompatible, path: paths.database, error.reason)
        }
        for record in records where record.kind == .committed && record.ownsLayer {
            guard let chainID = record.chainID, !Self.isDirectory(paths.diffDir(chainID)) else { continue }
            let upper = paths.snapshotUpperDir(record.id)
            guard Self.isDirectory(upper) else { continue }
            if !Self.isDirectory(paths.layerDir(chainID)) { try Self.makeDir(paths.layerDir(chainID), 0o700) }
            guard rename(upper, paths.diffDir(chainID)) == 0 else {
                throw .lastErrno(path: upper, "cannot finish committing snapshot \(record.name.debugDescription)")
            }
            try Durability.syncDirectory(paths.layerDir(chainID))
            repairs.append(paths.diffDir(chainID))
        }
        repairs += try removeUnrecordedSnapshotDirs()
        return repairs
    }

    /// Removes every `ROOT/snapshots/<number>` that is not the dir of a recorded snapshot, and
    /// returns their paths. A dir that cannot be removed (something is mounted in it) is left, and
    /// so is anything not named by a number (the server's lock file).
    func removeUnrecordedSnapshotDirs() throws(StoreError) -> [String] {
        let recorded: Set<String>
        do throws(SnapshotError) { recorded = Set(try snapshots().map { String($0.id) }) } catch {
            throw error.storeError ?? StoreError(.incompatible, path: paths.database, error.reason)
        }
        var removed = [String]()
        for name in try Self.entries(of: paths.snapshotsDir) where Int64(name) != nil && !recorded.contains(name) {
            let path = paths.snapshotsDir + "/" + name
            do throws(StoreError) { try Self.removeTree(path) } catch { continue }
            removed.append(path)
        }
        if !removed.isEmpty { try Durability.syncDirectory(paths.snapshotsDir) }
        return removed
    }
}
