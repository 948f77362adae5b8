/// One snapshot server per store: held by `layertool snapshotter` while it serves, so no second
/// server's cleanup can take a snapshot dir another is creating for a record not yet written.
/// Released when the object goes (or the process dies: it is a `flock`).
public final class SnapshotServiceClaim {
    private let lock: FileLock

    init(lock: FileLock) { self.lock = lock }

    deinit { lock.unlock() }
}

extension LayerStore {
    /// Claims the store for this process's snapshot server (`ROOT/snapshots/server.lock`,
    /// exclusive, not waiting); fails with `.unavailable` if another process holds it.
    public func claimSnapshotService() throws(SnapshotError) -> SnapshotServiceClaim {
        let path = paths.snapshotsDir + "/server.lock"
        do throws(StoreError) {
            try ensureSnapshotsDirectory()
            let lock = try FileLock(path: path)
            guard try lock.tryLock(.exclusive) else {
                throw StoreError(.incompatible, path: path, "another layertool snapshotter serves this store")
            }
            return SnapshotServiceClaim(lock: lock)
        } catch {
            throw SnapshotError(error, while: "cannot serve snapshots from \(root)")
        }
    }
}
