import LayerKit

/// An image in a registry, in Docker's grammar: `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`.
///
/// - The first path component is a registry host when it contains a `.` or a `:`, is
///   `localhost`, or has capitals (repository names never do); otherwise the registry is
///   `docker.io`, and a one-component path there gets the `library/` prefix (`busybox` is
///   `docker.io/library/busybox`).
/// - Without a tag or a digest the tag is `latest`. With both, the digest decides and the tag is
///   kept for messages only.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry as named (`docker.io`, `localhost:5000`, `[::1]:5000`, `registry.example`).
    public var registry: String
    /// The repository path (`library/busybox`, `team/app`).
    public var repository: String
    /// The tag, when one was given (or `latest` when neither a tag nor a digest was).
    public var tag: String?
    /// The manifest digest, when one was given.
    public var digest: Digest?

    /// Docker Hub's name, and the host its API is served from.
    public static let dockerHub = "docker.io"
    static let dockerHubAPIHost = "registry-1.docker.io"

    /// A reference from its parts, as given (not checked: `init(parsing:)` checks).
    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// Parses a reference; throws with the reason for anything Docker's grammar refuses.
    public init(parsing text: String) throws(RegistryError) {
        func bad(_ reason: String) -> RegistryError {
            RegistryError(.invalidReference, reference: text, "invalid reference: \(reason)")
        }
        guard !text.isEmpty else { throw bad("empty") }
        guard text.utf8.count <= 4096, !text.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value > 0x7e }) else {
            throw bad("only printable ASCII without spaces is allowed")
        }
        var rest = Substring(text)
        var digest: Digest? = nil
        if let at = rest.lastIndex(of: "@") {
            do { digest = try Digest(parsing: String(rest[rest.index(after: at)...])) } catch {
                throw bad(error.reason)
            }
            rest = rest[..<at]
        }
        // The tag is after the last `:` that has no `/` after it (a `:` before a `/` is a port).
        var tag: String? = nil
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
            guard Self.isValidTag(tag!) else {
                throw bad("tag \"\(tag!)\" must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -")
            }
        }
        var registry = Self.dockerHub
        var path = rest
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" || first.contains(where: \.isUppercase) {
                guard Self.isValidHost(first) else { throw bad("registry host \"\(first)\" is not a host name or address with an optional port") }
                registry = String(first)
                path = rest[rest.index(after: slash)...]
            }
        }
        if registry == "index.docker.io" { registry = Self.dockerHub }
        guard !path.isEmpty else { throw bad("no repository name") }
        guard !path.contains(where: \.isUppercase) else { throw bad("repository name \"\(path)\" must be lowercase") }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            guard Self.isValidPathComponent(component) else {
                throw bad("repository path component \"\(component)\" must be lowercase letters and digits separated by ., _, __ or dashes")
            }
        }
        var repository = String(path)
        if registry == Self.dockerHub && !repository.contains("/") { repository = "library/" + repository }
        guard registry.utf8.count + 1 + repository.utf8.count <= 255 else { throw bad("the name is longer than 255 characters") }
        if tag == nil && digest == nil { tag = "latest" }
        self.init(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    /// What the manifest is asked for by: the digest when there is one, else the tag.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// `HOST/PATH[:TAG][@DIGEST]`, fully qualified.
    public var description: String {
        var s = registry + "/" + repository
        if let tag { s += ":" + tag }
        if let digest { s += "@" + digest.description }
        return s
    }

    /// The same repository with another digest and no tag (a child manifest of an index).
    public func with(digest: Digest) -> ImageReference {
        ImageReference(registry: registry, repository: repository, tag: nil, digest: digest)
    }

    /// The host (and port) requests go to: Docker Hub's API host for `docker.io`.
    public var apiHost: String { registry == Self.dockerHub ? Self.dockerHubAPIHost : registry }

    // MARK: Grammar

    static func isValidTag<S: StringProtocol>(_ tag: S) -> Bool {
        guard let first = tag.utf8.first, tag.utf8.count <= 128 else { return false }
        guard isWord(first) else { return false }
        return tag.utf8.allSatisfy { isWord($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
    static func isValidPathComponent<S: StringProtocol>(_ component: S) -> Bool {
        let bytes = Array(component.utf8)
        guard let first = bytes.first, let last = bytes.last, isLowerAlnum(first), isLowerAlnum(last) else { return false }
        var i = 0
        while i < bytes.count {
            if isLowerAlnum(bytes[i]) { i += 1; continue }
            // A separator run: ".", "_", "__" or any number of "-".
            var j = i
            while j < bytes.count && !isLowerAlnum(bytes[j]) { j += 1 }
            let separator = bytes[i..<j]
            let ok = separator.elementsEqual([UInt8(ascii: ".")]) || separator.elementsEqual([UInt8(ascii: "_")])
                || separator.elementsEqual([UInt8(ascii: "_"), UInt8(ascii: "_")])
                || separator.allSatisfy { $0 == UInt8(ascii: "-") }
            guard ok else { return false }
            i = j
        }
        return true
    }

    /// A DNS name or IPv4 address, or `[IPv6]`, with an optional `:PORT`.
    static func isValidHost<S: StringProtocol>(_ host: S) -> Bool {
        var name = Substring(host)
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return false }
            let inner = name[name.index(after: name.startIndex)..<close]
            guard !inner.isEmpty, inner.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
            name = name[name.index(after: close)...]
            if name.isEmpty { return true }
            guard name.hasPrefix(":") else { return false }
            return isValidPort(name.dropFirst())
        }
        if let colon = name.lastIndex(of: ":") {
            guard isValidPort(name[name.index(after: colon)...]) else { return false }
            name = name[..<colon]
        }
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard let first = label.first, let last = label.last, label.count <= 63,
                  first.isLetter || first.isNumber, last.isLetter || last.isNumber,
                  label.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" }) else { return false }
        }
        return true
    }

    static func isValidPort<S: StringProtocol>(_ port: S) -> Bool {
        guard !port.isEmpty, port.count <= 5, port.allSatisfy(\.isNumber), let n = Int(port) else { return false }
        return n > 0 && n < 65536
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    private static func isWord(_ c: UInt8) -> Bool {
        isLowerAlnum(c) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_")
    }
}
