import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Why a layer store operation failed, with the path (or name) concerned:
/// `/var/lib/layertool/layers/3f…: cannot rename the staging dir into place: File exists`.
/// An error of a lower part (a layer, an image, a mount, the database) is carried intact.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    /// The class of problem, for callers that react to it.
    public enum Kind: Sendable, Equatable {
        /// Reading, verifying or applying a layer failed (see `layerError`).
        case layer(LayerError.Kind)
        /// Reading an image from a layout or archive failed (see `imageError`).
        case image(ImageError.Kind)
        /// Mounting or unmounting failed (see `mountError`).
        case mount
        /// The metadata database failed (see `databaseError`).
        case database
        /// A file system call failed.
        case system(Errno)
        /// No image, layer or container by that name is in the store.
        case notFound
        /// An argument is not acceptable (an empty image name, ...).
        case invalidArgument
        /// The store is not in a shape this code can use (a root that is a file, a newer schema, a
        /// store dir that is a symlink, ...).
        case incompatible
    }

    public let kind: Kind
    /// The file, directory or name concerned, when there is one.
    public var path: String?
    /// A short human-readable reason.
    public let reason: String
    /// The underlying layer error, for `.layer`.
    public var layerError: LayerError?
    /// The underlying image error, for `.image`.
    public var imageError: ImageError?
    /// The underlying mount error, for `.mount`.
    public var mountError: MountError?
    /// The underlying SQLite error (with its SQL), for `.database`.
    public var databaseError: DatabaseError?

    public init(_ kind: Kind, path: String? = nil, _ reason: String) {
        self.kind = kind
        self.path = path
        self.reason = reason
    }

    /// Wraps a layer error (its description already names the layer).
    public init(_ error: LayerError) {
        self.init(.layer(error.kind), error.description)
        self.layerError = error
    }

    /// Wraps an image error (its description names the layout or archive).
    public init(_ error: ImageError) {
        if case .layer = error.kind, let layerError = error.layerError {
            self.init(layerError)
        } else {
            self.init(.image(error.kind), error.description)
        }
        self.imageError = error
    }

    /// Wraps a mount error (its description names the mount point).
    public init(_ error: MountError) {
        self.init(.mount, error.description)
        self.mountError = error
    }

    /// One line: control characters in the path or the reason (a value read from a store
    /// someone else wrote) are escaped.
    public var description: String {
        if let path { return LayerError.oneLine("\(path): \(reason)") }
        return LayerError.oneLine(reason)
    }

    /// Whether the operation failed because it was cancelled.
    public var isCancellation: Bool { kind == .layer(.cancelled) }

    /// A failed system call on `path`: `path: what: strerror`.
    static func system(_ errno: Errno, path: String, _ what: String) -> StoreError {
        StoreError(.system(errno), path: path, "\(what): \(errno.description)")
    }

    /// `errno` after a failed call.
    static func lastErrno(path: String, _ what: String) -> StoreError {
        system(Errno(rawValue: errno), path: path, what)
    }

    /// The cancellation of an operation.
    static let cancelled = StoreError(LayerError(.cancelled, "cancelled"))
}

extension StoreError: DatabaseErrorConvertible {
    init(_ error: DatabaseError) {
        self.init(.database, error.description)
        self.databaseError = error
    }
}
