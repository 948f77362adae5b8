import LayerKit

/// containerd's filter language, as its List requests carry it: one filter string is selectors
/// joined by `,` (all must match); a request's several strings are alternatives (any may match).
///
/// ```
/// selector  := fieldpath [ ("==" | "!=" | "~=") value ]      (no operator: the field is present)
/// fieldpath := field ("." field)*                              field := [A-Za-z0-9_]+ | "quoted"
/// value     := "quoted" | /quoted/ | |quoted| | run of printable characters but ','
/// ```
///
/// Fields of a snapshot: `kind` (`active`, `view`, `committed`), `name`, `parent` (`""` for
/// none), `labels.KEY` (present only if the label is). `!=` matches an absent field unless the
/// value is empty; `~=` is an unanchored regular expression search.
public struct SnapshotFilter: Sendable, CustomStringConvertible {
    /// One `fieldpath operator value` test.
    public struct Selector: Sendable {
        public enum Operator: Sendable { case present, equal, notEqual, matches }
        public var fieldPath: [String]
        public var op: Operator
        public var value: String
    }

    /// Alternatives (OR) of conjunctions (AND); empty matches everything.
    public let alternatives: [[Selector]]
    public let description: String

    /// Parses a request's filter strings; a malformed one is an invalid argument naming it and
    /// the position.
    public init(_ filters: [String]) throws(SnapshotError) {
        var alternatives = [[Selector]]()
        for filter in filters where !filter.isEmpty {
            var parser = Parser(Array(filter.unicodeScalars), text: filter)
            alternatives.append(try parser.parseConjunction())
        }
        self.alternatives = alternatives
        description = filters.map(\.debugDescription).joined(separator: " or ")
    }

    /// Whether the snapshot passes.
    public func matches(_ snapshot: StoredSnapshot) -> Bool {
        alternatives.isEmpty || alternatives.contains { $0.allSatisfy { Self.matches($0, snapshot) } }
    }

    static func matches(_ selector: Selector, _ snapshot: StoredSnapshot) -> Bool {
        let field = Self.field(selector.fieldPath, of: snapshot)
        switch selector.op {
        case .present:
            return field != nil
        case .equal:
            return field == selector.value
        case .notEqual:
            return (field ?? "") != selector.value
        case .matches:
            guard let regex = try? Regex(selector.value) else { return false }
            return (field ?? "").contains(regex)
        }
    }

    static func field(_ path: [String], of snapshot: StoredSnapshot) -> String? {
        guard let first = path.first else { return nil }
        switch first {
        case "kind": return snapshot.kind.rawValue
        case "name": return snapshot.name
        case "parent": return snapshot.parentName ?? ""
        case "labels": return snapshot.labels[path.dropFirst().joined(separator: ".")]
        default: return nil
        }
    }

    private struct Parser {
        let scalars: [Unicode.Scalar]
        let text: String
        var position = 0

        init(_ scalars: [Unicode.Scalar], text: String) {
            self.scalars = scalars
            self.text = text
        }

        var peek: Unicode.Scalar? { position < scalars.count ? scalars[position] : nil }

        func failure(_ reason: String) -> SnapshotError {
            SnapshotError(.invalidArgument, "filter \(text.debugDescription): \(reason) at position \(position)")
        }

        mutating func skipSpaces() {
            while let c = peek, c.properties.isWhitespace { position += 1 }
        }

        mutating func parseConjunction() throws(SnapshotError) -> [Selector] {
            var selectors = [try parseSelector()]
            skipSpaces()
            while peek == "," {
                position += 1
                selectors.append(try parseSelector())
                skipSpaces()
            }
            guard peek == nil else { throw failure("unexpected \(String(peek!).debugDescription)") }
            return selectors
        }

        mutating func parseSelector() throws(SnapshotError) -> Selector {
            var path = [try parseField()]
            while peek == "." {
                position += 1
                path.append(try parseField())
            }
            skipSpaces()
            guard let c = peek, c == "=" || c == "!" || c == "~" else {
                return Selector(fieldPath: path, op: .present, value: "")
            }
            let op: Selector.Operator
            let next = position + 1 < scalars.count ? scalars[position + 1] : nil
            switch (c, next) {
            case ("=", "="): op = .equal
            case ("!", "="): op = .notEqual
            case ("~", "="): op = .matches
            default: throw failure("unknown operator")
            }
            position += 2
            skipSpaces()
            let value = try parseValue(allowAlternativeQuotes: op == .matches)
            if op == .matches {
                do { _ = try Regex(value) } catch { throw failure("invalid regular expression \(value.debugDescription)") }
            }
            return Selector(fieldPath: path, op: op, value: value)
        }

        mutating func parseField() throws(SnapshotError) -> String {
            skipSpaces()
            if peek == "\"" { return try parseQuoted("\"") }
            let start = position
            while let c = peek, c == "_" || ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) {
                position += 1
            }
            guard position > start else { throw failure("expected a field name") }
            return String(String.UnicodeScalarView(scalars[start..<position]))
        }

        mutating func parseValue(allowAlternativeQuotes: Bool) throws(SnapshotError) -> String {
            if let c = peek, c == "\"" || (allowAlternativeQuotes && (c == "/" || c == "|")) {
                return try parseQuoted(c)
            }
            let start = position
            while let c = peek, c != ",", !c.properties.isWhitespace, c.value >= 0x20, c.value != 0x7F {
                position += 1
            }
            guard position > start else { throw failure("expected a value") }
            return String(String.UnicodeScalarView(scalars[start..<position]))
        }

        /// A quoted string with Go's escapes (`\n`, `\\`, `\"`, `\x41`, `\u00e9`, octal `\101`).
        mutating func parseQuoted(_ quote: Unicode.Scalar) throws(SnapshotError) -> String {
            position += 1
            var out = String.UnicodeScalarView()
            while true {
                guard let c = peek, c != "\n" else { throw failure("quoted text not terminated") }
                position += 1
                if c == quote { return String(out) }
                guard c == "\\" else {
                    out.append(c)
                    continue
                }
                guard let e = peek else { throw failure("quoted text not terminated") }
                position += 1
                switch e {
                case "a": out.append("\u{07}")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "n": out.append("\n")
                case "r": out.append("\r")
                case "t": out.append("\t")
                case "v": out.append("\u{0B}")
                case "\\": out.append("\\")
                case quote: out.append(quote)
                case "0"..."7":
                    position -= 1
                    out.append(try digits(base: 8, count: 3))
                case "x": out.append(try digits(base: 16, count: 2))
                case "u": out.append(try digits(base: 16, count: 4))
                case "U": out.append(try digits(base: 16, count: 8))
                default: throw failure("illegal escape \\\(e)")
                }
            }
        }

        mutating func digits(base: UInt32, count: Int) throws(SnapshotError) -> Unicode.Scalar {
            var value: UInt32 = 0
            for _ in 0..<count {
                guard let c = peek, let digit = Character(c).hexDigitValue, UInt32(digit) < base else {
                    throw failure("illegal numeric escape")
                }
                value = value &* base &+ UInt32(digit)
                position += 1
            }
            guard let scalar = Unicode.Scalar(value) else { throw failure("escape is not a character") }
            return scalar
        }
    }
}
