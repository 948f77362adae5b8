import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Answers a registry's authentication challenges and holds what they earned: Basic
/// credentials, or Bearer tokens from the challenge's realm, cached per scope until they expire
/// and fetched again when the registry answers 401 to one.
actor RegistryAuthenticator {
    private enum Method {
        case anonymous
        case basic
        case bearer(realm: String, service: String?)
    }

    private struct CachedToken {
        var token: String
        var expires: ContinuousClock.Instant
    }

    private let credentials: RegistryCredentials?
    private let redactor: SecretRedactor
    private let registryHost: String
    private let registryIsPlainHTTP: Bool
    private let requestToken: @Sendable (HTTPClientRequest) async throws(RegistryError) -> (status: Int, body: [UInt8])
    private var method = Method.anonymous
    private var tokens = [AuthScope: CachedToken]()
    private var fetching = [AuthScope: Task<String, any Error>]()

    init(credentials: RegistryCredentials?, redactor: SecretRedactor, registryHost: String, registryIsPlainHTTP: Bool,
         requestToken: @escaping @Sendable (HTTPClientRequest) async throws(RegistryError) -> (status: Int, body: [UInt8])) {
        self.credentials = credentials
        self.redactor = redactor
        self.registryHost = registryHost
        self.registryIsPlainHTTP = registryIsPlainHTTP
        self.requestToken = requestToken
        if let credentials { redactor.add(credentials.password) }
    }

    /// The `Authorization` value for a request needing `scope`, fetching a token first when the
    /// registry is known to want one and none is cached; nil while no challenge was seen.
    func authorization(for scope: AuthScope) async throws(RegistryError) -> String? {
        switch method {
        case .anonymous:
            return nil
        case .basic:
            return credentials?.basicAuthorization
        case .bearer(let realm, let service):
            if let cached = tokens[scope], cached.expires > .now { return "Bearer " + cached.token }
            return "Bearer " + (try await fetchToken(realm: realm, service: service, scope: scope))
        }
    }

    /// Handles a 401: learns the method from the challenges and gets what the next attempt needs.
    /// Throws when trying again cannot help (no credentials for Basic, Basic credentials refused).
    func challenged(_ challenges: [AuthChallenge], scope: AuthScope, sent: String?, reference: String) async throws(RegistryError) {
        if let bearer = challenges.first(where: { $0.scheme == .bearer }) {
            guard let realm = bearer.parameters["realm"], !realm.isEmpty else {
                throw RegistryError(.protocolViolation, reference: reference, status: 401, "a Bearer challenge without a realm")
            }
            method = .bearer(realm: realm, service: bearer.parameters["service"])
            // Requests that failed together share one new token: fetch only when the token
            // this request sent is still the cached one (or there is none).
            if let cached = tokens[scope], cached.expires > .now, "Bearer " + cached.token != sent { return }
            tokens[scope] = nil
            var wanted = scope
            if let extra = bearer.parameters["scope"], !extra.isEmpty {
                let missing = extra.split(separator: " ").map(String.init).filter { !scope.covers($0) }
                if !missing.isEmpty { wanted = AuthScope(scope.scopes + missing) }
            }
            _ = try await fetchToken(realm: realm, service: bearer.parameters["service"], scope: wanted)
            if wanted != scope, let cached = tokens[wanted] { tokens[scope] = cached }
            return
        }
        if challenges.contains(where: { $0.scheme == .basic }) {
            guard let credentials else {
                throw RegistryError(.unauthorized, reference: reference, status: 401,
                                    "authentication required: give credentials (--creds, --authfile or an auth file entry for \(registryHost))")
            }
            if sent == credentials.basicAuthorization {
                throw RegistryError(.unauthorized, reference: reference, status: 401, "the registry refused the credentials of user \(credentials.username)")
            }
            method = .basic
            return
        }
        let schemes = challenges.map { challenge -> String in
            if case .other(let name) = challenge.scheme { return name } else { return "?" }
        }
        throw RegistryError(.unauthorized, reference: reference, status: 401,
                            schemes.isEmpty ? "authentication required and no challenge given" : "unsupported authentication scheme \(schemes.joined(separator: ", "))")
    }

    private struct TokenResponse: Decodable {
        var token: String?
        var access_token: String?
        var expires_in: Int?
    }

    /// GET realm?service=...&scope=... (with Basic credentials when there are some), as Docker's
    /// token protocol says; caches the token for `scope`.
    private func fetchToken(realm: String, service: String?, scope: AuthScope) async throws(RegistryError) -> String {
        if let running = fetching[scope] {
            do { return try await running.value } catch {
                throw error as? RegistryError ?? RegistryError(.cancelled, reference: registryHost, "cancelled")
            }
        }
        let task = Task { () async throws -> String in try await self.requestNewToken(realm: realm, service: service, scope: scope) }
        fetching[scope] = task
        defer { fetching[scope] = nil }
        do { return try await task.value } catch {
            throw error as? RegistryError ?? RegistryError(.cancelled, reference: registryHost, "cancelled")
        }
    }

    private func requestNewToken(realm: String, service: String?, scope: AuthScope) async throws(RegistryError) -> String {
        guard var components = URLComponents(string: realm), let scheme = components.scheme?.lowercased(),
              scheme == "https" || scheme == "http", components.host != nil else {
            throw RegistryError(.protocolViolation, reference: registryHost, "the token realm \"\(RegistryErrorResponse.sanitize(realm, limit: 200))\" is not an http(s) URL")
        }
        var query = components.queryItems ?? []
        if let service { query.append(URLQueryItem(name: "service", value: service)) }
        for s in scope.scopes { query.append(URLQueryItem(name: "scope", value: s)) }
        components.queryItems = query
        // Keep `+`, `:` and `,` readable but make sure `+` is not read as a space.
        components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        guard let url = components.string else {
            throw RegistryError(.protocolViolation, reference: registryHost, "cannot build the token URL")
        }
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        if let credentials {
            // Credentials travel over TLS only, unless the registry itself is plain HTTP.
            guard scheme == "https" || registryIsPlainHTTP else {
                throw RegistryError(.configuration, reference: registryHost, "the token realm is plain HTTP: credentials are not sent there")
            }
            request.headers.add(name: "Authorization", value: credentials.basicAuthorization)
        }
        let (status, body) = try await requestToken(request)
        guard status == 200 else {
            let parsed = RegistryErrorResponse.parse(body)
            let kind: RegistryError.Kind = status == 401 || status == 403 ? .unauthorized : .httpStatus
            let message = parsed?.message ?? (credentials == nil ? "the token server refused an anonymous token" : "the token server refused the credentials of user \(credentials!.username)")
            throw redactor.clean(RegistryError(kind, reference: registryHost, code: parsed?.code, status: status, message))
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(body)),
              let token = decoded.token.flatMap({ $0.isEmpty ? nil : $0 }) ?? decoded.access_token.flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw RegistryError(.protocolViolation, reference: registryHost, "the token server's answer has no token")
        }
        redactor.add(token)
        // Docker's rule: a token lives at least 60 s; renew a little before it ends.
        let lifetime = max(60, decoded.expires_in ?? 60)
        tokens[scope] = CachedToken(token: token, expires: .now + .seconds(Double(lifetime) * 0.9))
        return token
    }
}
