import AsyncHTTPClient
import Foundation
import LayerKit
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A client for one registry, speaking the OCI distribution API v1.1 (the CNCF distribution
/// registry's, Docker Hub's, GHCR's, ...): manifests, blobs and uploads, with authentication
/// (anonymous, Basic, Bearer tokens per scope), TLS per registry, redirects, retries and resumes.
///
/// Every request goes through `send`, which:
/// - adds the `Authorization` the authenticator holds for the request's scope, and only when the
///   request goes to the registry itself (never after a redirect to another host);
/// - answers a 401 once per request through the authenticator;
/// - follows redirects itself (at most 10; never from HTTPS down to HTTP);
/// - retries 429 and 5xx answers and failed connections per `RetryPolicy`, honouring `Retry-After`.
///
/// Call `shutdown()` when done.
public final class RegistryClient: Sendable {
    /// The registry as references name it (`docker.io`, `localhost:5000`).
    public let registry: String
    let options: RegistryClientOptions
    let http: HTTPClient
    let baseURL: String
    let registryTLS: TLSConfiguration?
    let authenticator: RegistryAuthenticator
    let redactor = SecretRedactor()
    var logger: Logger { options.logger }

    /// Manifests larger than this are refused, as containerd does.
    public static let maximumManifestSize = 4 << 20
    /// Image configs larger than this are refused.
    public static let maximumConfigSize = 16 << 20

    /// A client for `registry` (as references name it: `docker.io` goes to Docker Hub's API host).
    /// Throws when the certificate files for the registry cannot be read.
    public init(registry: String, options: RegistryClientOptions = RegistryClientOptions()) throws(RegistryError) {
        self.registry = registry
        self.options = options
        let host = registry == ImageReference.dockerHub ? ImageReference.dockerHubAPIHost : registry
        baseURL = (options.plainHTTP ? "http://" : "https://") + host
        registryTLS = options.plainHTTP ? nil : try options.tls.configuration(forHost: registry)

        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        // Connection failures come back at once; `send` retries them by its own policy (and
        // never a failed TLS handshake: an untrusted certificate does not become trusted).
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: TimeAmount(options.connectTimeout),
                                                                 read: TimeAmount(options.readTimeout))
        http = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
        let client = http
        let redactor = redactor
        let tls = registryTLS
        let registryHostPort = URLComponents(string: baseURL).map { Self.hostPort($0) } ?? ""
        authenticator = RegistryAuthenticator(
            credentials: options.credentials, redactor: redactor, registryHost: registry, registryIsPlainHTTP: options.plainHTTP,
            requestToken: { (request) throws(RegistryError) -> (status: Int, body: [UInt8]) in
                var request = request
                if let url = URLComponents(string: request.url), Self.hostPort(url) == registryHostPort { request.tlsConfiguration = tls }
                do {
                    let response = try await client.execute(request, timeout: .seconds(60))
                    let body = try await Self.collect(response.body, limit: 1 << 20)
                    return (Int(response.status.code), body)
                } catch let error as RegistryError {
                    throw redactor.clean(error)
                } catch {
                    throw redactor.clean(Self.transportError(error, reference: "token server"))
                }
            })
    }

    /// Closes the connections. The client cannot be used afterwards.
    public func shutdown() async {
        try? await http.shutdown()
    }

    // MARK: Requests

    /// A request to the registry.
    struct Request: Sendable {
        enum Body: Sendable {
            case none
            case bytes([UInt8])
            case file(path: String, offset: Int64, length: Int64)
        }
        var method: HTTPMethod
        /// Absolute, or a path (and query) under the registry's base URL.
        var url: String
        var headers: HTTPHeaders = [:]
        var body: Body = .none
        var scope: AuthScope
        /// Named in errors.
        var reference: String
        /// The whole exchange, body included, must end within this; nil for none (blobs, which
        /// rely on the read timeout instead).
        var deadline: Duration? = .seconds(120)
    }

    /// Sends `request` (see the type's documentation for what is handled here) and returns the
    /// final response, whose body the caller reads. Statuses are not checked beyond 401,
    /// redirects and retries.
    func send(_ request: Request) async throws(RegistryError) -> HTTPClientResponse {
        var url = request.url.hasPrefix("/") ? baseURL + request.url : request.url
        var method = request.method
        var body = request.body
        var attempt = 1
        var challengesAnswered = 0
        var redirects = 0
        while true {
            try checkCancellation(request.reference)
            guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
                  scheme == "https" || scheme == "http", components.host != nil else {
                throw RegistryError(.protocolViolation, reference: request.reference, "not an http(s) URL: \(RegistryErrorResponse.sanitize(url, limit: 200))")
            }
            let toRegistry = isRegistry(components)
            var outgoing = HTTPClientRequest(url: url)
            outgoing.method = method
            outgoing.headers = request.headers
            outgoing.headers.replaceOrAdd(name: "User-Agent", value: options.userAgent)
            if toRegistry { outgoing.tlsConfiguration = registryTLS }
            var sentAuthorization: String? = nil
            if toRegistry, let authorization = try await authenticator.authorization(for: request.scope) {
                outgoing.headers.replaceOrAdd(name: "Authorization", value: authorization)
                sentAuthorization = authorization
            }
            switch body {
            case .none:
                break
            case .bytes(let bytes):
                outgoing.body = .bytes(ByteBuffer(bytes: bytes))
            case .file(let path, let offset, let length):
                outgoing.body = .stream(FileChunkSequence(path: path, offset: offset, length: length), length: .known(length))
            }

            let response: HTTPClientResponse
            do {
                let deadline: NIODeadline = request.deadline.map { .now() + TimeAmount($0) } ?? .distantFuture
                response = try await http.execute(outgoing, deadline: deadline, logger: nil)
            } catch {
                let failure = redactor.clean(Self.transportError(error, reference: request.reference, host: Self.hostPort(components)))
                if failure.kind == .cancelled || failure.kind == .tls || attempt >= options.retry.maximumAttempts { throw failure }
                logger.info("registry request failed, retrying", metadata: ["method": "\(method.rawValue)", "url": "\(Self.redactedURL(url))", "error": "\(failure.message)"])
                try await pause(options.retry.delay(after: attempt, retryAfter: nil), reference: request.reference)
                attempt += 1
                continue
            }
            let status = Int(response.status.code)
            logger.debug("registry request", metadata: ["method": "\(method.rawValue)", "url": "\(Self.redactedURL(url))", "status": "\(status)"])

            // A 401 is answered twice at most: once for a missing or stale token, once more for
            // a token the registry refused (expired, revoked); the authenticator throws the
            // reason when asking again cannot help (Basic credentials refused).
            if status == 401 && toRegistry && challengesAnswered < 2 {
                challengesAnswered += 1
                _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
                let challenges = AuthChallenge.parse(response.headers["WWW-Authenticate"])
                do {
                    try await authenticator.challenged(challenges, scope: request.scope, sent: sentAuthorization, reference: request.reference)
                } catch {
                    throw redactor.clean(error)
                }
                continue
            }
            if [301, 302, 303, 307, 308].contains(status), let location = response.headers.first(name: "Location") {
                _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
                redirects += 1
                guard redirects <= 10 else {
                    throw RegistryError(.protocolViolation, reference: request.reference, status: status, "more than 10 redirects")
                }
                guard let next = URL(string: location, relativeTo: URL(string: url))?.absoluteString else {
                    throw RegistryError(.protocolViolation, reference: request.reference, status: status, "a redirect to an invalid location")
                }
                if scheme == "https" && next.lowercased().hasPrefix("http://") {
                    throw RegistryError(.protocolViolation, reference: request.reference, status: status, "a redirect from HTTPS to plain HTTP refused")
                }
                if status == 303 { method = .GET; body = .none }
                url = next
                continue
            }
            if (status == 429 || [500, 502, 503, 504].contains(status)) && attempt < options.retry.maximumAttempts {
                let retryAfter = response.headers.first(name: "Retry-After")
                _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
                let delay = options.retry.delay(after: attempt, retryAfter: retryAfter)
                logger.info("registry busy or failing, retrying", metadata: ["status": "\(status)", "url": "\(Self.redactedURL(url))", "delay": "\(delay)"])
                try await pause(delay, reference: request.reference)
                attempt += 1
                continue
            }
            return response
        }
    }

    /// The error for an unexpected response, from the registry's error JSON when it sent one.
    func error(from response: HTTPClientResponse, reference: String, notFound: String = "not found") async -> RegistryError {
        let status = Int(response.status.code)
        let body = (try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)) ?? []
        let parsed = RegistryErrorResponse.parse(body)
        let kind: RegistryError.Kind
        switch status {
        case 401: kind = .unauthorized
        case 403: kind = .denied
        case 404: kind = .notFound
        case 429: kind = .tooManyRequests
        default: kind = .httpStatus
        }
        var message = parsed?.message ?? ""
        if message.isEmpty {
            switch status {
            case 401: message = "authentication required"
            case 403: message = "access denied"
            case 404: message = notFound
            case 429: message = "too many requests"
            default: message = RegistryErrorResponse.sanitize(response.status.reasonPhrase, limit: 100)
            }
        }
        return redactor.clean(RegistryError(kind, reference: reference, code: parsed?.code, status: status, message))
    }

    // MARK: Helpers

    func isRegistry(_ url: URLComponents) -> Bool {
        guard let base = URLComponents(string: baseURL) else { return false }
        return url.scheme?.lowercased() == base.scheme && Self.hostPort(url) == Self.hostPort(base)
    }

    static func hostPort(_ url: URLComponents) -> String {
        let scheme = url.scheme?.lowercased() ?? "https"
        let port = url.port ?? (scheme == "http" ? 80 : 443)
        return (url.host ?? "").lowercased() + ":" + String(port)
    }

    /// The URL without its query (upload URLs carry state, presigned URLs carry signatures).
    static func redactedURL(_ url: String) -> String {
        String(url.prefix { $0 != "?" })
    }

    func checkCancellation(_ reference: String) throws(RegistryError) {
        if Task.isCancelled { throw RegistryError(.cancelled, reference: reference, "cancelled") }
    }

    func pause(_ delay: Duration, reference: String) async throws(RegistryError) {
        do { try await Task.sleep(for: delay) } catch {
            throw RegistryError(.cancelled, reference: reference, "cancelled")
        }
    }

    /// Reads a whole (small) body, refusing more than `limit` bytes.
    static func collect(_ body: HTTPClientResponse.Body, limit: Int) async throws(RegistryError) -> [UInt8] {
        var bytes = [UInt8]()
        do {
            for try await buffer in body {
                guard bytes.count + buffer.readableBytes <= limit else {
                    throw RegistryError(.protocolViolation, "the response body is larger than \(limit) bytes")
                }
                bytes += buffer.readableBytesView
            }
        } catch let error as RegistryError {
            throw error
        } catch {
            throw transportError(error, reference: nil)
        }
        return bytes
    }

    /// A connection-level failure as a registry error, in a few words.
    static func transportError(_ error: any Error, reference: String?, host: String? = nil) -> RegistryError {
        if error is CancellationError { return RegistryError(.cancelled, reference: reference, "cancelled") }
        if let error = error as? RegistryError { return error }
        if let error = error as? HTTPClientError {
            switch error {
            case .cancelled: return RegistryError(.cancelled, reference: reference, "cancelled")
            case .readTimeout: return RegistryError(.transport, reference: reference, "the registry stopped sending (read timeout)")
            case .connectTimeout: return RegistryError(.transport, reference: reference, "connection timed out")
            case .remoteConnectionClosed: return RegistryError(.transport, reference: reference, "the registry closed the connection")
            case .deadlineExceeded: return RegistryError(.transport, reference: reference, "the request took too long")
            default: return RegistryError(.transport, reference: reference, RegistryErrorResponse.sanitize(error.description, limit: 200))
            }
        }
        if let error = error as? NIOSSLError {
            return RegistryError(.tls, reference: reference, "TLS: " + RegistryErrorResponse.sanitize(String(describing: error), limit: 300))
        }
        if let error = error as? IOError {
            let reason = String(cString: strerror(error.errnoCode))
            return RegistryError(.transport, reference: reference, host.map { "cannot reach \($0): \(reason)" } ?? reason)
        }
        if let error = error as? NIOConnectionError {
            let reasons = error.connectionErrors.map { RegistryErrorResponse.sanitize(String(describing: $0.error), limit: 100) }
            return RegistryError(.transport, reference: reference, "cannot connect to \(error.host):\(error.port)" + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")))
        }
        return RegistryError(.transport, reference: reference, RegistryErrorResponse.sanitize(String(describing: error), limit: 300))
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
