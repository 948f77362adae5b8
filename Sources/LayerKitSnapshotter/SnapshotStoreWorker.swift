import Dispatch
import LayerKit

/// The layer store behind the gRPC handlers. Every snapshot call runs on this worker's own
/// serial queue, one after another: off Swift's cooperative threads (store calls block on disk
/// I/O and fsync), and alone, so that a call's checks and its changes are one step for the other
/// clients (two Prepares of one key: one succeeds, the other gets AlreadyExists). A call in
/// flight finishes even if its RPC is cancelled: the store's changes are never left half made.
final class SnapshotStoreWorker: @unchecked Sendable {
    // Touched only on `queue`.
    private let store: LayerStore
    private let queue = DispatchQueue(label: "layertool.snapshotter.store")
    /// Walks that need no store access (Usage) run here, beside the store's calls.
    private let measuring = DispatchQueue(label: "layertool.snapshotter.measure", attributes: .concurrent)

    init(store: LayerStore) {
        self.store = store
    }

    /// Runs `body` with the store, alone.
    func run<T: Sendable>(_ body: @escaping @Sendable (LayerStore) throws(SnapshotError) -> T) async throws(SnapshotError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, SnapshotError>, Never>) in
            queue.async {
                continuation.resume(returning: Result { () throws(SnapshotError) -> T in try body(self.store) })
            }
        }
        return try result.get()
    }

    /// Runs `body` (which must not touch the store) off the store's queue.
    func measure<T: Sendable>(_ body: @escaping @Sendable () throws(SnapshotError) -> T) async throws(SnapshotError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, SnapshotError>, Never>) in
            measuring.async {
                continuation.resume(returning: Result { () throws(SnapshotError) -> T in try body() })
            }
        }
        return try result.get()
    }
}
