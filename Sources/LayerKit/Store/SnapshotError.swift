/// Why a snapshot operation failed, in the classes containerd's `errdefs` distinguishes (a
/// snapshotter answers them as gRPC status codes).
public struct SnapshotError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// No snapshot by that key (or no such parent).
        case notFound
        /// The key or name is taken; also the answer of a Prepare served from a layer the store
        /// already had (containerd then finds the committed snapshot through List).
        case alreadyExists
        /// The snapshot is not in the state the call needs (committing a view, removing a
        /// snapshot that has children, ...).
        case failedPrecondition
        /// A malformed key, label, field path or filter.
        case invalidArgument
        /// The store itself failed (a file system call, the database).
        case unavailable
    }

    public let kind: Kind
    /// One line naming the snapshot and the reason.
    public let reason: String
    /// The store error behind an `.unavailable`, when there is one.
    public var storeError: StoreError?

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    /// A store failure, with the snapshot operation it interrupted.
    public init(_ error: StoreError, while what: String) {
        switch error.kind {
        case .notFound: kind = .notFound
        case .invalidArgument: kind = .invalidArgument
        default: kind = .unavailable
        }
        reason = "\(what): \(error.description)"
        storeError = error
    }

    public var description: String { reason }
}
