import Crypto
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A token server for distribution's `auth: token`: checks Basic credentials and issues JWTs
/// (ES256, with the signing certificate in `x5c`) granting the scopes asked for, which the
/// registry verifies against `certificate` (its rootcertbundle).
///
/// To test the client's care with secrets, a refused login is answered with an error message
/// that echoes the password back, as a careless (or hostile) server might.
final class TokenServer: @unchecked Sendable {
    let service = "layerkit-test-registry"
    let issuer = "layerkit-test-issuer"
    let certificate: String
    private let key: P256.Signing.PrivateKey
    private let certificateDER: [UInt8]
    private let users: [String: String]
    private var server: LoopbackServer!
    private let lock = NSLock()
    private var issued = [String]()
    private var requestedScopes = [[String]]()
    /// The next token issued has already expired (the registry then answers 401).
    var expireNextToken = false

    var realm: String { "http://127.0.0.1:\(server.port)/token" }

    init(directory: String, users: [String: String]) throws {
        self.users = users
        certificate = directory + "/token-signer.crt"
        let keyFile = directory + "/token-signer.key"
        let openssl = try requireTool("openssl")
        var r = try run(openssl, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                                  "-subj", "/CN=layerkit test token signer", "-keyout", keyFile, "-out", certificate])
        try #require(r.status == 0, "openssl: \(r.stderr)")
        r = try run(openssl, ["x509", "-in", certificate, "-outform", "DER", "-out", directory + "/token-signer.der"])
        try #require(r.status == 0, "openssl: \(r.stderr)")
        certificateDER = Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/token-signer.der")))
        key = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: keyFile, encoding: .utf8))
        server = try LoopbackServer { [unowned self] fd in
            guard let request = LoopbackServer.readRequest(fd) else { return }
            self.answer(request, on: fd)
        }
    }

    func stop() { server.stop() }

    /// Every token issued so far.
    var tokens: [String] {
        lock.lock()
        defer { lock.unlock() }
        return issued
    }

    /// The scopes of each token request so far.
    var requests: [[String]] {
        lock.lock()
        defer { lock.unlock() }
        return requestedScopes
    }

    func reset() {
        lock.lock()
        issued = []
        requestedScopes = []
        expireNextToken = false
        lock.unlock()
    }

    private func answer(_ request: LoopbackServer.Request, on fd: Int32) {
        let scopes = request.query.filter { $0.0 == "scope" }.map(\.1)
        lock.lock()
        requestedScopes.append(scopes)
        lock.unlock()
        var subject = ""
        if let authorization = request.header("Authorization") {
            guard authorization.hasPrefix("Basic "), let decoded = Data(base64Encoded: String(authorization.dropFirst(6))),
                  let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":") else {
                return LoopbackServer.respond(fd, status: 400)
            }
            let user = String(text[..<colon]), password = String(text[text.index(after: colon)...])
            guard users[user] == password else {
                let body = #"{"errors":[{"code":"UNAUTHORIZED","message":"login refused for \#(user) with password \#(password)"}]}"#
                return LoopbackServer.respond(fd, status: 401, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
            }
            subject = user
        }
        // Anonymous requests get a token granting nothing.
        var access = [Claims.Access]()
        if !subject.isEmpty {
            for scope in scopes {
                let parts = scope.split(separator: ":")
                guard parts.count == 3 else { continue }
                access.append(Claims.Access(type: String(parts[0]), name: String(parts[1]), actions: parts[2].split(separator: ",").map(String.init)))
            }
        }
        let now = Int(Date().timeIntervalSince1970)
        lock.lock()
        let expired = expireNextToken
        expireNextToken = false
        lock.unlock()
        let claims = Claims(iss: issuer, sub: subject, aud: service, iat: now, nbf: now - 10,
                            exp: expired ? now - 3600 : now + 300, jti: UUID().uuidString, access: access)
        let header = Header(typ: "JWT", alg: "ES256", x5c: [Data(certificateDER).base64EncodedString()])
        let signingInput = Self.base64URL(try! JSON.encode(header)) + "." + Self.base64URL(try! JSON.encode(claims))
        let signature = try! key.signature(for: Data(signingInput.utf8))
        let token = signingInput + "." + Self.base64URL(signature.rawRepresentation)
        lock.lock()
        issued.append(token)
        lock.unlock()
        let body = try! JSON.encode(TokenResponse(token: token, accessToken: token, expiresIn: 300))
        LoopbackServer.respond(fd, status: 200, headers: [("Content-Type", "application/json")], body: Array(body))
    }

    /// A JWT's JOSE header: ES256, with the signing certificate (DER, base64) in `x5c`.
    struct Header: Encodable {
        var typ: String
        var alg: String
        var x5c: [String]
    }

    /// The claims distribution checks: issuer, audience (the service), times, and the access granted.
    struct Claims: Encodable {
        var iss: String
        var sub: String
        var aud: String
        var iat: Int
        var nbf: Int
        var exp: Int
        var jti: String
        var access: [Access]

        /// What a token grants: actions (`pull`, `push`) on a repository.
        struct Access: Encodable {
            var type: String
            var name: String
            var actions: [String]
        }
    }

    /// The token endpoint's answer (both field names clients read).
    struct TokenResponse: Encodable {
        var token: String
        var accessToken: String
        var expiresIn: Int
        enum CodingKeys: String, CodingKey {
            case token
            case accessToken = "access_token"
            case expiresIn = "expires_in"
        }
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
