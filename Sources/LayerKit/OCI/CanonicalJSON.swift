import Foundation

/// The JSON LayerKit writes for documents whose digest matters (manifests, configs, indexes):
/// compact, keys sorted, slashes unescaped, so the same content always gives the same bytes.
enum CanonicalJSON {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every document type here encodes without failing (strings, numbers, digests).
        guard let data = try? encoder.encode(value) else { preconditionFailure("\(T.self) failed to encode") }
        return [UInt8](data)
    }

    /// Decodes a document, with a one-line reason on failure (not Swift's `DecodingError` dump).
    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(DocumentError) -> T {
        do { return try JSONDecoder().decode(type, from: Data(bytes)) } catch let error as DecodingError {
            throw DocumentError(reason: Self.describe(error))
        } catch {
            throw DocumentError(reason: "not valid JSON")
        }
    }

    /// Why a document did not decode, in one line: `rootfs.diff_ids[2]: invalid digest "…"`.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            var text = ""
            for key in keys {
                if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
            }
            return text.isEmpty ? "the document" : text
        }
        switch error {
        case .typeMismatch(let type, let context): return "\(path(context.codingPath)): expected \(Self.name(type))"
        case .valueNotFound(let type, let context): return "\(path(context.codingPath)): expected \(Self.name(type)), found null"
        case .keyNotFound(let key, let context): return "\(path(context.codingPath + [key])): missing"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return "not valid JSON" }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "cannot be decoded"
        }
    }

    private static func name(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Bool.Type: return "a boolean"
        default: return String(describing: type).hasPrefix("Array") ? "an array" : "an object"
        }
    }

    /// Why an image document could not be read.
    struct DocumentError: Error {
        let reason: String
    }
}
