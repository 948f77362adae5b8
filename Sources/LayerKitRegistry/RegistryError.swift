import LayerKit

/// Why a registry operation failed: one line naming the reference, the registry's error code and
/// message, and the HTTP status, e.g.
/// `localhost:5000/app:v2: MANIFEST_UNKNOWN: manifest unknown (HTTP 404)`.
///
/// No credential or token is ever part of an error: messages are built from the reference, the
/// status and the registry's own (sanitized, redacted) words.
public struct RegistryError: Error, Sendable, CustomStringConvertible {
    /// The class of problem, for callers that react to it.
    public enum Kind: Sendable, Equatable {
        /// The reference does not follow Docker's grammar.
        case invalidReference
        /// 401: no credentials, wrong credentials, or a token the registry refused.
        case unauthorized
        /// 403: authenticated, but not allowed.
        case denied
        /// 404: the manifest, blob or repository does not exist.
        case notFound
        /// 429 after every retry.
        case tooManyRequests
        /// 5xx after every retry, or another status the protocol does not expect here.
        case httpStatus
        /// The registry answered something the protocol does not allow (bad headers, bad JSON,
        /// too many bytes, a redirect loop).
        case protocolViolation
        /// A manifest or blob does not hash to its digest (or has the wrong size).
        case digestMismatch
        /// A manifest or an index the client will not read (Docker schema 1, over 4 MiB, no
        /// manifest for the platform, an unknown media type).
        case unsupported
        /// The connection failed (refused, reset, dropped and not resumable, a timeout).
        case transport
        /// TLS setup or the handshake failed (untrusted certificate, unreadable key).
        case tls
        /// Credentials or certificate files could not be read.
        case configuration
        /// Applying a layer failed (corrupt data, a breakout attempt, a diffID mismatch).
        case unpack(LayerError.Kind)
        /// The layer store refused or failed the import (see the message).
        case store
        /// The operation was cancelled.
        case cancelled
    }

    /// What kind of failure it is.
    public let kind: Kind
    /// The image, repository or URL the operation was about.
    public var reference: String?
    /// The registry's error code (`MANIFEST_UNKNOWN`, `UNAUTHORIZED`, ...), when it sent one.
    public var code: String?
    /// The HTTP status, when there was a response.
    public var status: Int?
    /// What went wrong, in a few words.
    public var message: String

    /// An error; `message` must hold no secret.
    public init(_ kind: Kind, reference: String? = nil, code: String? = nil, status: Int? = nil, _ message: String) {
        self.kind = kind
        self.reference = reference
        self.code = code
        self.status = status
        self.message = message
    }

    public var description: String {
        var parts = [String]()
        if let reference { parts.append(reference) }
        if let code { parts.append(code) }
        var text = parts.joined(separator: ": ")
        if !text.isEmpty { text += ": " }
        text += message
        if let status { text += " (HTTP \(status))" }
        return text
    }

    /// The same error about `reference`, unless it already names one.
    func about(_ reference: String) -> RegistryError {
        var copy = self
        if copy.reference == nil { copy.reference = reference }
        return copy
    }

    /// Whether retrying the same request may succeed (429, 5xx, a dropped connection).
    var isTransient: Bool {
        switch kind {
        case .tooManyRequests, .transport: return true
        case .httpStatus: return (status ?? 0) >= 500
        default: return false
        }
    }
}
