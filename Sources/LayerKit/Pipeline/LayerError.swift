import SystemPackage

/// Why a layer could not be read or applied. Carries the layer's name and the entry concerned,
/// so the message can say exactly where the problem is:
/// `layer.tar.gz: entry "../etc/x": path escapes the target`.
public struct LayerError: Error, CustomStringConvertible, Sendable {
    /// The class of problem, for callers that react to it.
    public enum Kind: Sendable, Equatable {
        /// The archive names a path outside the target (`..`, a link target outside).
        case pathEscapes
        /// The entry is not acceptable (bad whiteout, device number too large, root replaced by a non-directory...).
        case invalidEntry
        /// The blob is not gzip, zstd or tar, or is truncated or corrupt.
        case corruptArchive
        /// The blob's digest, size or diffID differs from the expected one.
        case digestMismatch
        /// A file system call failed.
        case system(Errno)
        /// The input could not be opened or read.
        case input
        /// Compressing a layer failed (an encoder's error).
        case compression
        /// The operation was cancelled (`CancellationFlag`, or the calling Task).
        case cancelled
    }

    public let kind: Kind
    /// The layer (file name, `-` for stdin), when known.
    public var layer: String?
    /// The archive entry concerned, when there is one.
    public var entry: String?
    /// A short human-readable reason.
    public let reason: String

    public init(_ kind: Kind, entry: String? = nil, layer: String? = nil, _ reason: String) {
        self.kind = kind
        self.entry = entry
        self.layer = layer
        self.reason = reason
    }

    public var description: String {
        var parts = [String]()
        if let layer { parts.append(Self.oneLine(layer)) }
        if let entry { parts.append("entry \"\(Self.oneLine(entry))\"") }
        parts.append(reason)
        return parts.joined(separator: ": ")
    }

    /// `text` with its control characters escaped (`\n`, `\x1b`): a name may hold any byte but
    /// `/` and NUL, an error is one line.
    static func oneLine(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else { return text }
        var escaped = ""
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x0a: escaped += "\\n"
            case 0x09: escaped += "\\t"
            case 0..<0x20, 0x7f: escaped += "\\x" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16)
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    /// The same error, attributed to a layer.
    func inLayer(_ name: String) -> LayerError {
        var copy = self
        if copy.layer == nil { copy.layer = name }
        return copy
    }

    static func system(_ errno: Errno, entry: String?, _ what: String) -> LayerError {
        LayerError(.system(errno), entry: entry, "\(what): \(errno.description)")
    }
}

extension LayerError {
    /// The errno of a `.system` error.
    public var errno: Errno? {
        if case .system(let e) = kind { return e }
        return nil
    }
}
