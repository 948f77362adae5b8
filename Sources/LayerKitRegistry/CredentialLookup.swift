import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where credentials for a registry come from, in podman's and skopeo's order:
/// `--creds`, then the first auth file (`--authfile FILE`, `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`) with an entry for the
/// registry.
///
/// The library reads no environment variable: the caller passes its environment (a CLI passes
/// `ProcessInfo.processInfo.environment`).
public enum CredentialLookup {
    /// The auth files to search, in order. Files that do not exist are skipped when searched.
    public static func authFiles(authFile: String? = nil, environment: [String: String]) -> [String] {
        var files = [String]()
        if let authFile, !authFile.isEmpty { files.append(authFile) }
        if let file = environment["REGISTRY_AUTH_FILE"], !file.isEmpty { files.append(file) }
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { files.append(runtime + "/containers/auth.json") }
        if let home = environment["HOME"], !home.isEmpty { files.append(home + "/.docker/config.json") }
        return files
    }

    /// Credentials for `reference`'s registry: `explicit` when given, else the first file in
    /// `files` with an entry for it (a `host/path` entry matching the repository wins over the
    /// host's). Nil when no file has one: the registry is then used anonymously.
    public static func credentials(for reference: ImageReference, explicit: RegistryCredentials? = nil,
                                   files: [String]) throws(RegistryError) -> RegistryCredentials? {
        if let explicit { return explicit }
        for file in files {
            guard let entries = try readAuthFile(file) else { continue }
            if let found = try match(reference, in: entries, file: file) { return found }
        }
        return nil
    }

    /// Bytes of an auth file read at most.
    static let maximumFileSize = 4 << 20

    /// The `auths` map of an auth file, or nil when the file does not exist.
    static func readAuthFile(_ path: String) throws(RegistryError) -> [String: AuthEntry]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw RegistryError(.configuration, reference: path, "cannot read the auth file: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw RegistryError(.configuration, reference: path, "cannot read the auth file: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += chunk[0..<n]
            guard bytes.count <= maximumFileSize else { throw RegistryError(.configuration, reference: path, "the auth file is larger than 4 MiB") }
        }
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x09 || $0 == 0x0d }) { return [:] }
        // The decoder's own messages could quote the file: only the fact is reported.
        guard let file = try? JSONDecoder().decode(AuthFile.self, from: Data(bytes)) else {
            throw RegistryError(.configuration, reference: path, "the auth file is not valid JSON with an \"auths\" object")
        }
        return file.auths ?? [:]
    }

    struct AuthFile: Decodable {
        var auths: [String: AuthEntry]?
    }

    struct AuthEntry: Decodable {
        var auth: String?
        var username: String?
        var password: String?
    }

    /// The entry for the repository (most specific `host/path` first) or the host.
    static func match(_ reference: ImageReference, in entries: [String: AuthEntry], file: String) throws(RegistryError) -> RegistryCredentials? {
        var byKey = [String: AuthEntry]()
        for (key, entry) in entries { byKey[normalizeKey(key)] = entry }
        var candidates = [String]()
        var path = reference.registry + "/" + reference.repository
        while true {
            candidates.append(path)
            guard let slash = path.lastIndex(of: "/") else { break }
            path = String(path[..<slash])
        }
        for key in candidates {
            guard let entry = byKey[key] else { continue }
            if let credentials = try decode(entry, key: key, file: file) { return credentials }
        }
        return nil
    }

    /// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/` → `host:5000`.
    static func normalizeKey(_ key: String) -> String {
        var k = Substring(key)
        for scheme in ["https://", "http://"] where k.hasPrefix(scheme) { k = k.dropFirst(scheme.count) }
        while k.hasSuffix("/") { k = k.dropLast() }
        for suffix in ["/v1", "/v2"] where k.hasSuffix(suffix) { k = k.dropLast(suffix.count) }
        var host = k
        var path: Substring = ""
        if let slash = k.firstIndex(of: "/") { host = k[..<slash]; path = k[slash...] }
        if host == "index.docker.io" || host == "registry-1.docker.io" { host = "docker.io" }
        return String(host + path)
    }

    static func decode(_ entry: AuthEntry, key: String, file: String) throws(RegistryError) -> RegistryCredentials? {
        if let auth = entry.auth, !auth.isEmpty {
            guard let decoded = Base64.decode(auth), let text = String(validating: decoded, as: UTF8.self),
                  let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
                throw RegistryError(.configuration, reference: file, "the \"auth\" field for \(key) is not base64 of USER:PASSWORD")
            }
            return RegistryCredentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
        }
        if let user = entry.username, !user.isEmpty, let password = entry.password {
            return RegistryCredentials(username: user, password: password)
        }
        return nil
    }
}
