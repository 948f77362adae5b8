import Foundation

/// The error body of the distribution API: `{"errors":[{"code":"...","message":"...","detail":...}]}`.
struct RegistryErrorResponse: Decodable {
    struct Entry: Decodable {
        var code: String?
        var message: String?
    }
    var errors: [Entry]?

    /// Bytes of an error body read at most: bodies are for one line of message.
    static let maximumBodySize = 64 << 10

    /// The first error's code and message, made safe to print on one line; nil when the body is
    /// not the registry's error JSON.
    static func parse(_ body: [UInt8]) -> (code: String?, message: String?)? {
        guard let decoded = try? JSONDecoder().decode(RegistryErrorResponse.self, from: Data(body)),
              let first = decoded.errors?.first else { return nil }
        let code = first.code.map { sanitize($0, limit: 64) }.flatMap { $0.isEmpty ? nil : $0 }
        let message = first.message.map { sanitize($0, limit: 300) }.flatMap { $0.isEmpty ? nil : $0 }
        var more = ""
        if let count = decoded.errors?.count, count > 1 { more = " (and \(count - 1) more)" }
        return (code, message.map { $0 + more } ?? (more.isEmpty ? nil : more))
    }

    /// One line of printable text, at most `limit` characters: what a hostile registry sends
    /// must not forge terminal escapes or further lines.
    static func sanitize(_ text: String, limit: Int) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if out.unicodeScalars.count >= limit { out += "…"; break }
            if scalar.properties.generalCategory == .control || scalar == "\u{2028}" || scalar == "\u{2029}" {
                out += " "
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out.trimmingCharacters(in: .whitespaces)
    }
}
