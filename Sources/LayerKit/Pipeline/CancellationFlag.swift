import Synchronization

/// A flag a long operation checks between chunks and entries: set it (from any thread, for
/// example a Task's cancellation handler) and the operation stops with `LayerError.Kind.cancelled`,
/// leaving nothing behind.
public final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    /// Asks the operation to stop.
    public func cancel() { flag.store(true, ordering: .relaxed) }

    /// Whether `cancel()` was called.
    public var isCancelled: Bool { flag.load(ordering: .relaxed) }

    /// Throws `.cancelled` once `cancel()` was called.
    func check() throws(LayerError) {
        if isCancelled { throw LayerError(.cancelled, "cancelled") }
    }
}
