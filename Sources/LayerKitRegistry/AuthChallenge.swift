/// One challenge of a `WWW-Authenticate` header: `Bearer realm="...",service="...",scope="..."`
/// or `Basic realm="..."`.
struct AuthChallenge: Sendable, Equatable {
    enum Scheme: Sendable, Equatable {
        case basic
        case bearer
        case other(String)
    }
    var scheme: Scheme
    /// Parameter names in lowercase.
    var parameters: [String: String]

    /// Every challenge in the given header values (several may share one header).
    static func parse(_ headers: [String]) -> [AuthChallenge] {
        headers.flatMap { parse($0) }
    }

    static func parse(_ header: String) -> [AuthChallenge] {
        var scanner = Scanner(Array(header.utf8))
        var result = [AuthChallenge]()
        while true {
            scanner.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: ",") }
            guard let scheme = scanner.token() else { break }
            var challenge = AuthChallenge(scheme: Self.scheme(scheme), parameters: [:])
            // Parameters until a token that is not followed by "=" (the next challenge's scheme).
            while true {
                scanner.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: ",") }
                let mark = scanner.position
                guard let name = scanner.token() else { break }
                scanner.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                guard scanner.consume(UInt8(ascii: "=")) else { scanner.position = mark; break }
                scanner.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                let value = scanner.quoted() ?? scanner.token() ?? ""
                challenge.parameters[name.lowercased()] = value
            }
            result.append(challenge)
        }
        return result
    }

    private static func scheme(_ name: String) -> Scheme {
        switch name.lowercased() {
        case "basic": return .basic
        case "bearer": return .bearer
        default: return .other(name)
        }
    }

    private struct Scanner {
        let bytes: [UInt8]
        var position = 0
        init(_ bytes: [UInt8]) { self.bytes = bytes }

        mutating func skip(while predicate: (UInt8) -> Bool) {
            while position < bytes.count && predicate(bytes[position]) { position += 1 }
        }

        mutating func consume(_ byte: UInt8) -> Bool {
            guard position < bytes.count, bytes[position] == byte else { return false }
            position += 1
            return true
        }

        /// An RFC 7230 token (also taking `/`, `:` and `+` as some servers send unquoted URLs).
        mutating func token() -> String? {
            let start = position
            while position < bytes.count {
                let c = bytes[position]
                let isDelimiter = c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: ",")
                    || c == UInt8(ascii: "=") || c == UInt8(ascii: "\"") || c < 0x21 || c > 0x7e
                if isDelimiter { break }
                position += 1
            }
            return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
        }

        /// A quoted string with backslash escapes.
        mutating func quoted() -> String? {
            guard consume(UInt8(ascii: "\"")) else { return nil }
            var value = [UInt8]()
            while position < bytes.count {
                let c = bytes[position]
                position += 1
                if c == UInt8(ascii: "\\"), position < bytes.count {
                    value.append(bytes[position])
                    position += 1
                } else if c == UInt8(ascii: "\"") {
                    break
                } else {
                    value.append(c)
                }
            }
            return String(decoding: value, as: UTF8.self)
        }
    }
}
