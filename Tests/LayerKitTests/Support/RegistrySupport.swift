import Crypto
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Shared support for the registry tests: a real CNCF distribution registry (Debian's
// docker-registry) per configuration, a fault-injecting HTTP proxy, a token server that signs
// the tokens the registry verifies, certificates made with openssl, and running layertool with
// a chosen environment. Every server listens on 127.0.0.1 on a free port and is stopped (and its
// temp dir removed) when its suite ends, whatever the tests did.

enum RegistryTools {
    static let registry = which("docker-registry")
    /// The binary under test (as CLITests: LAYERTOOL_BIN or the debug build).
    static let binary = ProcessInfo.processInfo.environment["LAYERTOOL_BIN"] ?? repositoryRoot + "/.build/debug/layertool"
    static let busyboxLayout = fixturesDir + "/busybox"

    /// A tree as the interop tests compare them: dir mtimes and the root's own mtime left out.
    static func snapshot(_ root: String) -> TreeSnapshot {
        var snap = TreeSnapshot(root)
        snap.nodes["."]?.mtime = nil
        return snap
    }

    /// Expects two trees to be equal entry by entry.
    static func expectSameTree(_ expected: String, _ expectedName: String, _ actual: String,
                               sourceLocation: SourceLocation = #_sourceLocation) {
        let theirs = snapshot(expected), mine = snapshot(actual)
        let diffs = theirs.differences(from: mine)
        #expect(diffs.isEmpty, "\(expectedName) (first) and layertool pull (second) differ:\n\(diffs.joined(separator: "\n"))",
                sourceLocation: sourceLocation)
        #expect(theirs.nodes.count > 10, "\(expectedName) has almost nothing", sourceLocation: sourceLocation)
    }
    static var haveRegistry: Bool { registry != nil }
    static var haveOpenSSL: Bool { which("openssl") != nil }
    static var haveHtpasswd: Bool { which("htpasswd") != nil }
    static var haveSkopeo: Bool { which("skopeo") != nil }
    static var haveUmoci: Bool { isRoot && which("umoci") != nil }

    /// Runs a program with extra environment variables (HOME, REGISTRY_AUTH_FILE, ...).
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    replacingEnvironment: Bool = false) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = replacingEnvironment ? ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"] : ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// `layertool ARGS` with a clean environment (PATH and whatever is given), so the user's own
    /// auth files never take part.
    static func layertool(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        try run(RegistryTools.binary, arguments, environment: environment, replacingEnvironment: true)
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts connections on 127.0.0.1:port.
    static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    static func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}

/// A test CA and certificates signed by it, made with openssl.
struct TestCertificates {
    let dir: String
    var caCert: String { dir + "/ca.crt" }
    var serverCert: String { dir + "/server.crt" }
    var serverKey: String { dir + "/server.key" }
    var clientCert: String { dir + "/client.cert" }
    var clientKey: String { dir + "/client.key" }

    init(in dir: String) throws {
        self.dir = dir
        let openssl = which("openssl")!
        func ssl(_ args: [String]) throws {
            let r = try run(openssl, args)
            try #require(r.status == 0, "openssl \(args.first ?? ""): \(r.stderr)")
        }
        try ssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                 "-subj", "/CN=LayerKit test CA", "-keyout", dir + "/ca.key", "-out", caCert])
        try RegistryTools.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", to: dir + "/server.ext")
        try ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", serverKey, "-out", dir + "/server.csr"])
        try ssl(["x509", "-req", "-in", dir + "/server.csr", "-CA", caCert, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", dir + "/server.ext", "-out", serverCert])
        try RegistryTools.write("extendedKeyUsage=clientAuth\n", to: dir + "/client.ext")
        try ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=layertool test client",
                 "-keyout", clientKey, "-out", dir + "/client.csr"])
        try ssl(["x509", "-req", "-in", dir + "/client.csr", "-CA", caCert, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", dir + "/client.ext", "-out", clientCert])
    }
}

/// A docker-registry (CNCF distribution 2.8) process with its own config and storage.
final class RegistryServer: @unchecked Sendable {
    enum Auth {
        case none
        case htpasswd(file: String)
        case token(realm: String, service: String, issuer: String, rootCertBundle: String)
    }
    struct TLS {
        var certificate: String
        var key: String
        /// Client certificates must be signed by one of these.
        var clientCAs: [String] = []
    }

    let port: Int
    let dir: TempDir
    private let process: Process
    var host: String { "127.0.0.1:\(port)" }

    init(auth: Auth = .none, tls: TLS? = nil) throws {
        dir = TempDir("registry")
        port = RegistryTools.freePort()
        var config = """
            version: 0.1
            log:
              level: warn
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(dir.path)/storage
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
              secret: layerkit-test-secret

            """
        if let tls {
            config += "  tls:\n    certificate: \(tls.certificate)\n    key: \(tls.key)\n"
            if !tls.clientCAs.isEmpty {
                config += "    clientcas:\n" + tls.clientCAs.map { "      - \($0)\n" }.joined()
            }
        }
        switch auth {
        case .none: break
        case .htpasswd(let file):
            config += "auth:\n  htpasswd:\n    realm: layerkit-test\n    path: \(file)\n"
        case .token(let realm, let service, let issuer, let bundle):
            config += "auth:\n  token:\n    realm: \(realm)\n    service: \(service)\n    issuer: \(issuer)\n    rootcertbundle: \(bundle)\n"
        }
        try RegistryTools.write(config, to: dir.sub("config.yml"))
        process = Process()
        process.executableURL = URL(fileURLWithPath: RegistryTools.registry!)
        process.arguments = ["serve", dir.sub("config.yml")]
        _ = FileManager.default.createFile(atPath: dir.sub("registry.log"), contents: nil)
        let log = FileHandle(forWritingAtPath: dir.sub("registry.log"))!
        process.standardOutput = log
        process.standardError = log
        try process.run()
        // Bounded wait for the listener (the registry starts in well under a second).
        for _ in 0..<400 where !RegistryTools.isListening(port) {
            guard process.isRunning else { break }
            usleep(50_000)
        }
        guard RegistryTools.isListening(port) else {
            stop()
            let log = (try? String(contentsOfFile: dir.sub("registry.log"), encoding: .utf8)) ?? ""
            throw RegistryTestError("docker-registry did not start: \(log)")
        }
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

struct RegistryTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A tiny threaded TCP server on 127.0.0.1 for the test's own HTTP endpoints (the fault proxy and
/// the token server): one thread accepts, one thread per connection runs `handle`.
final class LoopbackServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let handle: @Sendable (Int32) -> Void
    private let stopped = DispatchSemaphore(value: 0)

    init(handle: @escaping @Sendable (Int32) -> Void) throws {
        self.handle = handle
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.listener = listener
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(listener, 64) == 0 else { close(listener); throw RegistryTestError("cannot listen") }
        let stopped = self.stopped
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread {
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 {
                    if errno == EINTR { continue }
                    break
                }
                let worker = Thread {
                    handle(connection)
                    close(connection)
                }
                worker.start()
            }
            stopped.signal()
        }
        thread.start()
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        stopped.wait()
    }

    // MARK: HTTP/1.1 bits

    struct Request {
        var method: String
        var target: String
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        var path: String { String(target.prefix { $0 != "?" }) }
        var query: [(String, String)] {
            guard let q = target.firstIndex(of: "?") else { return [] }
            return target[target.index(after: q)...].split(separator: "&").map { pair in
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                return (parts[0], parts.count > 1 ? parts[1] : "")
            }
        }
    }

    /// Reads one request (head and Content-Length body); nil at EOF or on garbage.
    static func readRequest(_ fd: Int32) -> Request? {
        guard let (head, rest) = readHead(fd) else { return nil }
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let first = lines[0].split(separator: " ")
        guard first.count >= 2 else { return nil }
        var headers = [(String, String)]()
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var request = Request(method: String(first[0]), target: String(first[1]), headers: headers, body: rest)
        let length = Int(request.header("Content-Length") ?? "0") ?? 0
        while request.body.count < length {
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return nil }
            request.body += buffer[0..<n]
        }
        return request
    }

    /// Reads up to the end of an HTTP head; returns the head text and the bytes after it.
    static func readHead(_ fd: Int32) -> (String, [UInt8])? {
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if let end = find([13, 10, 13, 10], in: data) {
                return (String(decoding: data[..<end], as: UTF8.self), Array(data[(end + 4)...]))
            }
            guard data.count < 1 << 20 else { return nil }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return nil }
            data += buffer[0..<n]
        }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle { return i }
        return nil
    }

    @discardableResult
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    static func respond(_ fd: Int32, status: Int, reason: String = "", headers: [(String, String)] = [], body: [UInt8] = []) {
        var head = "HTTP/1.1 \(status) \(reason.isEmpty ? "Status" : reason)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        sendAll(fd, Array(head.utf8) + body)
    }
}

/// An HTTP proxy in front of a plain-HTTP registry that injects faults: each rule applies to
/// requests whose method and path match, a given number of times. Every request is logged.
final class FaultProxy: @unchecked Sendable {
    enum Fault: Sendable {
        /// Answer this status (no body) without asking the registry.
        case status(Int, headers: [(String, String)] = [])
        /// Answer this instead of the registry.
        case respond(Int, headers: [(String, String)], body: [UInt8])
        /// Forward the head and this many body bytes, then close the connection.
        case dropAfter(Int)
        /// Forward everything, with the body byte at this offset flipped.
        case corrupt(at: Int)
        /// Forward the head and this many body bytes, then send nothing more (until the client
        /// goes away, or 30 s).
        case stallAfter(Int)
        /// Forward without the request's Range header (a server that ignores Range).
        case ignoreRange
    }
    struct Rule: Sendable {
        var method: String
        var pathContains: String
        var fault: Fault
        var remaining: Int
    }
    struct Logged: Sendable {
        var method: String
        var target: String
        var range: String?
        var authorization: Bool
    }

    let upstreamPort: Int
    private var server: LoopbackServer!
    private let lock = NSLock()
    private var rules = [Rule]()
    private var log = [Logged]()
    private var stalls = 0
    var port: Int { server.port }

    /// Whether a `stallAfter` fault has started holding a response back.
    var stalled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stalls > 0
    }
    var host: String { "127.0.0.1:\(port)" }

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        server = try LoopbackServer { [unowned self] fd in self.serve(fd) }
    }

    func add(_ method: String, _ pathContains: String, _ fault: Fault, times: Int = 1) {
        lock.lock()
        rules.append(Rule(method: method, pathContains: pathContains, fault: fault, remaining: times))
        lock.unlock()
    }

    func reset() {
        lock.lock()
        rules = []
        log = []
        stalls = 0
        lock.unlock()
    }

    var requests: [Logged] {
        lock.lock()
        defer { lock.unlock() }
        return log
    }

    func stop() { server.stop() }

    private func takeFault(for request: LoopbackServer.Request) -> Fault? {
        lock.lock()
        defer { lock.unlock() }
        log.append(Logged(method: request.method, target: request.target, range: request.header("Range"),
                          authorization: request.header("Authorization") != nil))
        guard let i = rules.firstIndex(where: { $0.method == request.method && request.path.contains($0.pathContains) && $0.remaining > 0 }) else { return nil }
        rules[i].remaining -= 1
        return rules[i].fault
    }

    private func serve(_ client: Int32) {
        while let request = LoopbackServer.readRequest(client) {
            let fault = takeFault(for: request)
            switch fault {
            case .status(let code, let headers):
                LoopbackServer.respond(client, status: code, headers: headers)
                return
            case .respond(let code, let headers, let body):
                LoopbackServer.respond(client, status: code, headers: headers, body: request.method == "HEAD" ? [] : body)
                return
            default:
                forward(request, to: client, fault: fault)
                return
            }
        }
    }

    private func forward(_ request: LoopbackServer.Request, to client: Int32, fault: Fault?) {
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(upstream) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(upstreamPort).bigEndian
        guard withUnsafePointer(to: &address, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 else {
            LoopbackServer.respond(client, status: 502)
            return
        }
        var head = "\(request.method) \(request.target) HTTP/1.1\r\n"
        var dropped: Set<String> = ["connection"]
        if case .ignoreRange = fault { dropped.insert("range") }
        for (k, v) in request.headers where !dropped.contains(k.lowercased()) { head += "\(k): \(v)\r\n" }
        head += "Connection: close\r\n\r\n"
        LoopbackServer.sendAll(upstream, Array(head.utf8) + request.body)
        guard let (responseHead, firstBody) = LoopbackServer.readHead(upstream) else { return }
        var responseHeadText = responseHead.split(separator: "\r\n", omittingEmptySubsequences: false)
            .filter { !$0.lowercased().hasPrefix("connection:") }.joined(separator: "\r\n")
        responseHeadText += "\r\nConnection: close\r\n\r\n"
        LoopbackServer.sendAll(client, Array(responseHeadText.utf8))
        var sent = 0
        var pending = firstBody
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if !pending.isEmpty {
                var chunk = pending
                pending = []
                if case .corrupt(let offset) = fault, offset >= sent, offset < sent + chunk.count { chunk[offset - sent] ^= 0xFF }
                if case .stallAfter(let limit) = fault, sent + chunk.count >= limit {
                    LoopbackServer.sendAll(client, Array(chunk[0..<(limit - sent)]))
                    lock.lock()
                    stalls += 1
                    lock.unlock()
                    var descriptor = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
                    _ = poll(&descriptor, 1, 30_000)
                    return
                }
                if case .dropAfter(let limit) = fault, sent + chunk.count >= limit {
                    // The connection ends mid-body (closed in order, so exactly `limit` bytes arrive).
                    LoopbackServer.sendAll(client, Array(chunk[0..<(limit - sent)]))
                    return
                }
                guard LoopbackServer.sendAll(client, chunk) else { return }
                sent += chunk.count
            }
            let n = recv(upstream, &buffer, buffer.count, 0)
            if n <= 0 { return }
            pending = Array(buffer[0..<n])
        }
    }
}

// MARK: - Token server


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
        let openssl = which("openssl")!
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
        var access = [[String: Any]]()
        if !subject.isEmpty {
            for scope in scopes {
                let parts = scope.split(separator: ":")
                guard parts.count == 3 else { continue }
                access.append(["type": String(parts[0]), "name": String(parts[1]), "actions": parts[2].split(separator: ",").map(String.init)])
            }
        }
        let now = Int(Date().timeIntervalSince1970)
        lock.lock()
        let expired = expireNextToken
        expireNextToken = false
        lock.unlock()
        let claims: [String: Any] = [
            "iss": issuer, "sub": subject, "aud": service, "iat": now, "nbf": now - 10,
            "exp": expired ? now - 3600 : now + 300, "jti": UUID().uuidString, "access": access,
        ]
        let header: [String: Any] = ["typ": "JWT", "alg": "ES256", "x5c": [Data(certificateDER).base64EncodedString()]]
        let signingInput = Self.base64URL(try! JSONSerialization.data(withJSONObject: header)) + "."
            + Self.base64URL(try! JSONSerialization.data(withJSONObject: claims))
        let signature = try! key.signature(for: Data(signingInput.utf8))
        let token = signingInput + "." + Self.base64URL(signature.rawRepresentation)
        lock.lock()
        issued.append(token)
        lock.unlock()
        let body = try! JSONSerialization.data(withJSONObject: ["token": token, "access_token": token, "expires_in": 300])
        LoopbackServer.respond(fd, status: 200, headers: [("Content-Type", "application/json")], body: Array(body))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

// MARK: - Environments, started once per suite

/// The servers and images a registry suite uses, started by its trait before the suite's first
/// test and stopped after its last.
final class RegistryEnvironment: @unchecked Sendable {
    enum Kind: Sendable {
        /// Plain HTTP, with the fault proxy in front.
        case plain
        /// TLS with a CA of the test's; client certificates required.
        case tls
        /// htpasswd Basic auth (plain HTTP).
        case basicAuth
        /// Token auth with the test's token server (plain HTTP).
        case tokenAuth
    }

    @TaskLocal static var current: RegistryEnvironment?

    static let user = "layertool"
    static let password = "s3cret-pass-7781"
    static let wrongPassword = "wrong-pass-5512"

    let kind: Kind
    let dir = TempDir("registry-env")
    var registry: RegistryServer!
    var proxy: FaultProxy?
    var tokenServer: TokenServer?
    var certificates: TestCertificates?
    /// A cert dir for the client: the CA, the client certificate and key.
    var clientCertDir: String?
    /// The busybox fixture as gzip-only layers (what Debian's umoci reads).
    var gzipLayout: String { dir.sub("busybox-gz") }

    init(_ kind: Kind) throws {
        self.kind = kind
        switch kind {
        case .plain:
            registry = try RegistryServer()
            proxy = try FaultProxy(upstreamPort: registry.port)
        case .tls:
            let certs = try TestCertificates(in: dir.mkdir("certs"))
            certificates = certs
            registry = try RegistryServer(tls: .init(certificate: certs.serverCert, key: certs.serverKey, clientCAs: [certs.caCert]))
            let clientDir = dir.mkdir("client-certs")
            for (from, to) in [(certs.caCert, "ca.crt"), (certs.clientCert, "client.cert"), (certs.clientKey, "client.key")] {
                try FileManager.default.copyItem(atPath: from, toPath: clientDir + "/" + to)
            }
            clientCertDir = clientDir
        case .basicAuth:
            let file = dir.sub("htpasswd")
            let r = try run(which("htpasswd")!, ["-B", "-b", "-c", file, Self.user, Self.password])
            try #require(r.status == 0, "htpasswd: \(r.stderr)")
            registry = try RegistryServer(auth: .htpasswd(file: file))
            proxy = try FaultProxy(upstreamPort: registry.port)
        case .tokenAuth:
            let tokens = try TokenServer(directory: dir.mkdir("token"), users: [Self.user: Self.password])
            tokenServer = tokens
            registry = try RegistryServer(auth: .token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                       rootCertBundle: tokens.certificate))
        }
        try pushFixture()
    }

    /// Pushes fixtures/busybox as `busybox:latest` (its second layer is zstd) and a gzip-only copy
    /// as `busybox-gz:latest`, with skopeo.
    private func pushFixture() throws {
        let store = dir.sub("fixture-store")
        var r = try RegistryTools.layertool(["unpack", "--image", RegistryTools.busyboxLayout + ":latest", "--name", "busybox", "--root", store])
        try #require(r.status == 0, "import: \(r.stderr)")
        r = try RegistryTools.layertool(["export", "--gzip", "--root", store, "busybox", gzipLayout + ":latest"])
        try #require(r.status == 0, "export: \(r.stderr)")
        for (layout, name) in [(RegistryTools.busyboxLayout, "busybox"), (gzipLayout, "busybox-gz")] {
            r = try RegistryTools.run(which("skopeo")!, ["copy", "--quiet"] + skopeoDestinationFlags
                                      + ["oci:\(layout):latest", "docker://\(registry.host)/\(name):latest"])
            try #require(r.status == 0, "skopeo copy to the registry: \(r.stderr)")
        }
    }

    var skopeoDestinationFlags: [String] {
        switch kind {
        case .plain: return ["--dest-tls-verify=false"]
        case .tls: return ["--dest-cert-dir", clientCertDir!]
        case .basicAuth, .tokenAuth: return ["--dest-tls-verify=false", "--dest-creds", "\(Self.user):\(Self.password)"]
        }
    }

    var skopeoSourceFlags: [String] {
        switch kind {
        case .plain: return ["--src-tls-verify=false"]
        case .tls: return ["--src-cert-dir", clientCertDir!]
        case .basicAuth, .tokenAuth: return ["--src-tls-verify=false", "--src-creds", "\(Self.user):\(Self.password)"]
        }
    }

    func stop() {
        proxy?.stop()
        registry?.stop()
        tokenServer?.stop()
    }

    /// The names a pull leaves beside its destination if it fails to clean up (staging dirs,
    /// spool files): none may remain.
    static func leftovers(in parent: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []).filter { $0.contains(".layertool") }
    }
}

/// Starts a `RegistryEnvironment` for a whole suite (skipped, with the suite, when the tools are missing).
struct RegistryEnvironmentTrait: SuiteTrait, TestScoping {
    let kind: RegistryEnvironment.Kind
    let available: Bool

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard available else { return try await function() }
        let environment = try RegistryEnvironment(kind)
        defer { environment.stop() }
        try await RegistryEnvironment.$current.withValue(environment) { try await function() }
    }
}

extension Trait where Self == RegistryEnvironmentTrait {
    static func registryEnvironment(_ kind: RegistryEnvironment.Kind, available: Bool) -> Self {
        RegistryEnvironmentTrait(kind: kind, available: available)
    }
}

/// What every registry suite needs: docker-registry, skopeo (to push the fixture), layertool built.
var haveRegistryPeers: Bool {
    RegistryTools.haveRegistry && RegistryTools.haveSkopeo && access(RegistryTools.binary, X_OK) == 0
}
