import SystemPackage

/// Why an image could not be read from an OCI layout or a `docker save` archive: the layout or
/// archive, and the reason (`oci: blob sha256:3f… is missing`).
public struct ImageError: Error, CustomStringConvertible, Sendable {
    /// The class of problem, for callers that react to it.
    public enum Kind: Sendable, Equatable {
        /// Not an OCI layout or `docker save` archive at all.
        case notAnImage
        /// No image has the reference asked for.
        case referenceNotFound
        /// An index, manifest or config is not what it must be (bad JSON, wrong shape, too large).
        case invalidDocument
        /// Something LayerKit does not read (a media type, a layout version, no manifest for this platform).
        case unsupported
        /// A blob a document names is not in the layout.
        case missingBlob
        /// A blob's bytes or size differ from its descriptor's.
        case blobMismatch
        /// A name points outside the layout or archive.
        case pathEscapes
        /// A file system call failed.
        case system(Errno)
        /// Unpacking a layer of the image (or extracting a `docker save` archive, itself a tar)
        /// failed (see `layerError`).
        case layer(LayerError.Kind)
    }

    public let kind: Kind
    /// The layout dir or archive concerned.
    public var source: String
    /// A short human-readable reason.
    public let reason: String
    /// The underlying error, for `.archive`.
    public var layerError: LayerError?

    public init(_ kind: Kind, source: String, _ reason: String) {
        self.kind = kind
        self.source = source
        self.reason = reason
    }

    /// Wraps the error of unpacking a layer or an archive (its description already names it).
    init(source: String, _ error: LayerError) {
        self.kind = .layer(error.kind)
        self.source = source
        self.reason = error.description
        self.layerError = error
    }

    public var description: String {
        if case .layer = kind { return reason }
        return "\(source): \(reason)"
    }
}
