import Foundation

/// JSON in the tests, always through Codable: `--json` output decoded into the records of
/// LayertoolOutput.swift, image documents into ImageSpec's types, and a document that is edited in
/// place (a fixture's config, runc's config.json) into LayerKit's `JSONValue`, which keeps every
/// field it does not know.
enum JSON {
    /// Decodes `data` as a `T`; the error names `what` and quotes the start of the text.
    static func decode<T: Decodable>(_ type: T.Type, from data: Data, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw DecodingFailure(what: what, type: "\(T.self)", text: String(decoding: data.prefix(4000), as: UTF8.self), error: error)
        }
    }

    /// Decodes `text` (e.g. a command's stdout) as a `T`.
    static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try decode(type, from: Data(text.utf8), what: "the text")
    }

    /// Reads and decodes the JSON file at `path`.
    static func read<T: Decodable>(_ type: T.Type, file path: String) throws -> T {
        guard let data = FileManager.default.contents(atPath: path) else { throw ReadFailure(path: path) }
        return try decode(type, from: data, what: path)
    }

    /// Compact JSON with sorted keys and unescaped slashes: the same value always gives the same bytes.
    static func encode(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }

    /// Writes `value` to `path` as `encode` gives it.
    static func write(_ value: some Encodable, to path: String) throws {
        try encode(value).write(to: URL(fileURLWithPath: path))
    }

    struct DecodingFailure: Error, CustomStringConvertible {
        var what: String
        var type: String
        var text: String
        var error: any Error
        var description: String { "\(what) does not decode as \(type): \(error)\n--- text\n\(text)" }
    }

    struct ReadFailure: Error, CustomStringConvertible {
        var path: String
        var description: String { "cannot read \(path)" }
    }
}

extension ProcessResult {
    /// stdout decoded as a `T`; the error quotes stdout and stderr.
    func json<T: Decodable>(_ type: T.Type) throws -> T {
        try JSON.decode(type, from: Data(stdout.utf8), what: "stdout (exit status \(status), stderr: \(stderr))")
    }
}
