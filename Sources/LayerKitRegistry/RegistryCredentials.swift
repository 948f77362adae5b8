/// A user name and password (or an identity token) for one registry.
///
/// Its descriptions never show the secret, so printing or logging the value by mistake leaks
/// nothing.
public struct RegistryCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The user name (shown in messages).
    public var username: String
    /// The password or token (never shown).
    public var password: String

    /// Credentials from their parts.
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// `--creds USER[:PASS]`: everything after the first `:` is the password.
    public init(parsing text: String) throws(RegistryError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw RegistryError(.configuration, "credentials must be USER:PASSWORD")
        }
        let user = String(text[..<colon])
        guard !user.isEmpty else { throw RegistryError(.configuration, "credentials have an empty user name") }
        self.init(username: user, password: String(text[text.index(after: colon)...]))
    }

    public var description: String { "\(username):<redacted>" }
    public var debugDescription: String { "RegistryCredentials(username: \(username.debugDescription), password: <redacted>)" }

    /// `Basic base64(user:password)`.
    var basicAuthorization: String {
        "Basic " + Base64.encode(Array("\(username):\(password)".utf8))
    }
}

/// Standard base64, for Basic authorization and auth files.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8], urlSafe: Bool = false, padded: Bool = true) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        func symbol(_ v: UInt8) -> UInt8 {
            let c = alphabet[Int(v)]
            guard urlSafe else { return c }
            return c == UInt8(ascii: "+") ? UInt8(ascii: "-") : c == UInt8(ascii: "/") ? UInt8(ascii: "_") : c
        }
        while i < bytes.count {
            let b0 = bytes[i], b1 = i + 1 < bytes.count ? bytes[i + 1] : 0, b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(symbol(b0 >> 2))
            out.append(symbol((b0 & 0x3) << 4 | b1 >> 4))
            if i + 1 < bytes.count { out.append(symbol((b1 & 0xF) << 2 | b2 >> 6)) } else if padded { out.append(UInt8(ascii: "=")) }
            if i + 2 < bytes.count { out.append(symbol(b2 & 0x3F)) } else if padded { out.append(UInt8(ascii: "=")) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes standard or URL-safe base64, padded or not; nil for anything else.
    static func decode(_ text: String) -> [UInt8]? {
        var values = [UInt8]()
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"), UInt8(ascii: "-"): values.append(62)
            case UInt8(ascii: "/"), UInt8(ascii: "_"): values.append(63)
            case UInt8(ascii: "="): continue
            case UInt8(ascii: "\n"), UInt8(ascii: "\r"): continue
            default: return nil
            }
        }
        guard values.count % 4 != 1 else { return nil }
        var out = [UInt8]()
        var i = 0
        while i < values.count {
            let v0 = values[i], v1 = i + 1 < values.count ? values[i + 1] : 0
            let v2 = i + 2 < values.count ? values[i + 2] : 0, v3 = i + 3 < values.count ? values[i + 3] : 0
            out.append(v0 << 2 | v1 >> 4)
            if i + 2 < values.count { out.append((v1 & 0xF) << 4 | v2 >> 2) }
            if i + 3 < values.count { out.append((v2 & 0x3) << 6 | v3) }
            i += 4
        }
        return out
    }
}
