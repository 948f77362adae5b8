import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Why a layer store operation failed, with the path (or name) concerned:
/// `/var/lib/layertool/layers/3f…: cannot rename the staging dir into place: File exists`.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    /// The class of problem, for callers that react to it.
    public enum Kind: Sendable, Equatable {
        /// Reading, verifying or applying a layer failed (see `layerError`).
        case layer(LayerError.Kind)
        /// The metadata database failed (see `databaseError`).
        case database
        /// A file system call failed.
        case system(Errno)
        /// No image (or layer) by that name is in the store.
        case notFound
        /// An argument is not acceptable (an empty image name, ...).
        case invalidArgument
        /// The store is not in a shape this code can use (a root that is a file, a newer schema, ...).
        case incompatible
    }

    public let kind: Kind
    /// The file, directory or name concerned, when there is one.
    public var path: String?
    /// A short human-readable reason.
    public let reason: String
    /// The underlying layer error, for `.layer`.
    public var layerError: LayerError?
    /// The underlying SQLite error (with its SQL), for `.database`.
    public var databaseError: DatabaseError?

    public init(_ kind: Kind, path: String? = nil, _ reason: String) {
        self.kind = kind
        self.path = path
        self.reason = reason
    }

    /// Wraps a layer error (its description already names the layer).
    public init(_ error: LayerError) {
        self.kind = .layer(error.kind)
        self.path = nil
        self.reason = error.description
        self.layerError = error
    }

    public var description: String {
        if let path { return "\(path): \(reason)" }
        return reason
    }

    /// A failed system call on `path`: `path: what: strerror`.
    static func system(_ errno: Errno, path: String, _ what: String) -> StoreError {
        StoreError(.system(errno), path: path, "\(what): \(errno.description)")
    }

    /// `errno` after a failed call.
    static func lastErrno(path: String, _ what: String) -> StoreError {
        system(Errno(rawValue: errno), path: path, what)
    }
}

extension StoreError: DatabaseErrorConvertible {
    init(_ error: DatabaseError) {
        self.kind = .database
        self.path = nil
        self.reason = error.description
        self.databaseError = error
    }
}
