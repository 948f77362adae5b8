import Foundation
import LayerKit
import LayerKitRegistry
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Authentication and TLS against real registries: htpasswd Basic auth, token auth with the
// test's token server (tokens signed with a key whose certificate is the registry's
// rootcertbundle), and TLS with a CA made by the test, client certificates required.
// Credentials come from --creds, --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR and
// ~/.docker/config.json; no password or token may ever show in what layertool prints.

/// Checks a failed pull: one line, status 1, DEST not created, no secret in the output.
private func expectRefused(_ r: (status: Int32, stdout: String, stderr: String), dest: String, mentioning words: [String],
                           secrets: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 1, "status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.split(separator: "\n").count == 1, "expected one line: \(r.stderr)", sourceLocation: sourceLocation)
    for word in words { #expect(r.stderr.contains(word), "\"\(word)\" missing from: \(r.stderr)", sourceLocation: sourceLocation) }
    for secret in secrets {
        #expect(!r.stderr.contains(secret) && !r.stdout.contains(secret), "a secret was printed: \(r.stderr)", sourceLocation: sourceLocation)
    }
    #expect(access(dest, F_OK) != 0, "DEST was created", sourceLocation: sourceLocation)
    let parent = (dest as NSString).deletingLastPathComponent
    #expect(RegistryEnvironment.leftovers(in: parent).isEmpty, sourceLocation: sourceLocation)
}

/// An auth file with `auths[key].auth = base64(user:password)`.
private func writeAuthFile(_ path: String, key: String, user: String, password: String) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let auth = Data("\(user):\(password)".utf8).base64EncodedString()
    try #"{"auths":{"\#(key)":{"auth":"\#(auth)"}}}"#.write(toFile: path, atomically: true, encoding: .utf8)
}

@Suite(.serialized, .enabled(if: haveRegistryPeers && RegistryTools.haveHtpasswd, "needs docker-registry, skopeo and htpasswd (apache2-utils)"),
       .registryEnvironment(.basicAuth, available: haveRegistryPeers && RegistryTools.haveHtpasswd))
struct RegistryBasicAuthTests {
    var registry: String { RegistryEnvironment.current!.registry.host }
    let user = RegistryEnvironment.user, password = RegistryEnvironment.password, wrong = RegistryEnvironment.wrongPassword

    @Test func wrongPasswordIsOneLineAndWritesNothing() throws {
        let tmp = TempDir("basic-wrong")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(wrong)", "\(registry)/busybox:latest", tmp.sub("rootfs")])
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: ["\(registry)/busybox:latest", "refused the credentials of user \(user)", "(HTTP 401)"],
                      secrets: [wrong, password, Data("\(user):\(wrong)".utf8).base64EncodedString()])
    }

    @Test func noCredentialsSaysAuthenticationIsRequired() throws {
        let tmp = TempDir("basic-none")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/busybox:latest", tmp.sub("rootfs")])
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: ["authentication required", "(HTTP 401)"])
    }

    @Test func credentialsFromEverySourceInOrder() throws {
        let tmp = TempDir("basic-sources")
        let good = tmp.sub("good.json"), bad = tmp.sub("bad.json")
        try writeAuthFile(good, key: registry, user: user, password: password)
        try writeAuthFile(bad, key: registry, user: user, password: wrong)
        func pull(_ flags: [String], environment: [String: String], _ name: String) throws -> (status: Int32, stdout: String, stderr: String) {
            try RegistryTools.layertool(["pull", "--plain-http"] + flags + ["\(registry)/busybox:latest", tmp.sub(name)], environment: environment)
        }
        // --creds first, then --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.
        var r = try pull(["--creds", "\(user):\(password)", "--authfile", bad], environment: ["REGISTRY_AUTH_FILE": bad], "creds")
        #expect(r.status == 0, "--creds: \(r.stderr)")
        r = try pull(["--authfile", good], environment: ["REGISTRY_AUTH_FILE": bad], "authfile")
        #expect(r.status == 0, "--authfile: \(r.stderr)")
        let runtime = tmp.sub("run")
        try writeAuthFile(runtime + "/containers/auth.json", key: "http://\(registry)/", user: user, password: wrong)
        r = try pull([], environment: ["REGISTRY_AUTH_FILE": good, "XDG_RUNTIME_DIR": runtime], "env")
        #expect(r.status == 0, "$REGISTRY_AUTH_FILE: \(r.stderr)")
        r = try pull([], environment: ["XDG_RUNTIME_DIR": runtime], "runtime-wrong")
        #expect(r.status == 1, "the XDG_RUNTIME_DIR file (wrong password) was not used: \(r.stderr)")
        #expect(!r.stderr.contains(wrong))
        try writeAuthFile(runtime + "/containers/auth.json", key: "\(registry)/busybox", user: user, password: password)
        r = try pull([], environment: ["XDG_RUNTIME_DIR": runtime], "runtime")
        #expect(r.status == 0, "$XDG_RUNTIME_DIR with a repository key: \(r.stderr)")
        let home = tmp.sub("home")
        try writeAuthFile(home + "/.docker/config.json", key: registry, user: user, password: password)
        r = try pull([], environment: ["HOME": home], "home")
        #expect(r.status == 0, "~/.docker/config.json: \(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: tmp.sub("home/bin/busybox")))
    }

    @Test func unreadableAuthFileNamesTheFileNotItsContent() throws {
        let tmp = TempDir("basic-badfile")
        try #"{"auths":{"x":{"auth":"not-base64-\#(password)!"}}"#.write(toFile: tmp.sub("broken.json"), atomically: true, encoding: .utf8)
        let r = try RegistryTools.layertool(["pull", "--plain-http", "--authfile", tmp.sub("broken.json"), "\(registry)/busybox:latest", tmp.sub("rootfs")])
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: [tmp.sub("broken.json"), "not valid JSON"], secrets: [password])
    }

    @Test func redirectToAnotherHostDropsTheAuthorization() throws {
        let proxy = RegistryEnvironment.current!.proxy!
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("basic-redirect")
        let layer = "sha256:b4b440e5186b23932c70e5a0df2931d32cce16fe7923573c960f6fc52284829d"
        let blob = Array(try Data(contentsOf: URL(fileURLWithPath: RegistryTools.busyboxLayout + "/blobs/sha256/" + layer.dropFirst(7))))
        // The layer's GET is sent on to "another host" (the proxy under its other name), as
        // registries send blobs to object stores; that host serves the blob without asking for auth.
        proxy.add("GET", "/v2/busybox/blobs/" + layer, .respond(307, headers: [("Location", "http://localhost:\(proxy.port)/object-store/\(layer)")], body: []))
        proxy.add("GET", "/object-store/", .respond(200, headers: [("Content-Type", "application/octet-stream")], body: blob))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(password)", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        let requests = proxy.requests
        let redirected = requests.filter { $0.target.hasPrefix("/object-store/") }
        #expect(redirected.count == 1 && redirected.allSatisfy { !$0.authorization }, "\(redirected)")
        #expect(requests.contains { $0.target.hasSuffix("/manifests/latest") && $0.authorization }, "the registry itself gets the credentials")
        #expect(FileManager.default.fileExists(atPath: tmp.sub("rootfs/bin/busybox")))
    }

    @Test func pushWithCredentials() throws {
        let tmp = TempDir("basic-push")
        var r = try RegistryTools.layertool(["unpack", "--image", RegistryTools.busyboxLayout + ":latest", "--name", "busybox", "--root", tmp.sub("store")])
        try #require(r.status == 0, "\(r.stderr)")
        r = try RegistryTools.layertool(["push", "--root", tmp.sub("store"), "--plain-http", "--creds", "\(user):\(wrong)", "busybox", "\(registry)/pushed:v1"])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && !r.stderr.contains(wrong), "\(r.stderr)")
        r = try RegistryTools.layertool(["push", "--root", tmp.sub("store"), "--plain-http", "--creds", "\(user):\(password)", "busybox", "\(registry)/pushed:v1"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(password)", "\(registry)/pushed:v1", tmp.sub("rootfs")])
        #expect(r.status == 0, "\(r.stderr)")
    }
}

@Suite(.serialized, .enabled(if: haveRegistryPeers && RegistryTools.haveOpenSSL, "needs docker-registry, skopeo and openssl"),
       .registryEnvironment(.tokenAuth, available: haveRegistryPeers && RegistryTools.haveOpenSSL))
struct RegistryTokenAuthTests {
    var environment: RegistryEnvironment { RegistryEnvironment.current! }
    var registry: String { environment.registry.host }
    var tokens: TokenServer { environment.tokenServer! }
    let user = RegistryEnvironment.user, password = RegistryEnvironment.password, wrong = RegistryEnvironment.wrongPassword

    @Test func pullFetchesOneTokenForThePullScope() throws {
        tokens.reset()
        let tmp = TempDir("token-pull")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(password)", "\(registry)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(tokens.requests == [["repository:busybox:pull"]], "one token, cached for the manifest, the config and both layers")
        for token in tokens.tokens { #expect(!r.stdout.contains(token) && !r.stderr.contains(token)) }
        #expect(FileManager.default.fileExists(atPath: tmp.sub("rootfs/bin/busybox")))
    }

    @Test func aTokenTheRegistryRefusesIsFetchedAgain() async throws {
        tokens.reset()
        tokens.expireNextToken = true
        let tmp = TempDir("token-expired")
        let reference = try ImageReference(parsing: "\(registry)/busybox:latest")
        let client = try RegistryClient(registry: reference.registry, options: RegistryClientOptions(
            credentials: RegistryCredentials(username: user, password: password), plainHTTP: true))
        do {
            let result = try await ImagePuller(client: client).pull(reference, to: tmp.sub("rootfs"))
            #expect(result.summaries.count == 2)
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
        // The first token had expired: the registry answered 401 and a second one was fetched.
        #expect(tokens.requests.count == 2, "\(tokens.requests)")
    }

    @Test func noSecretInTheLog() async throws {
        tokens.reset()
        tokens.expireNextToken = true
        let tmp = TempDir("token-log")
        let captured = CapturedLog()
        var logger = Logger(label: "test", factory: { _ in CapturingLogHandler(log: captured) })
        logger.logLevel = .trace
        let reference = try ImageReference(parsing: "\(registry)/busybox:latest")
        for credentials in [RegistryCredentials(username: user, password: password), RegistryCredentials(username: user, password: wrong)] {
            let client = try RegistryClient(registry: reference.registry, options: RegistryClientOptions(
                credentials: credentials, plainHTTP: true, logger: logger))
            var failure: RegistryError? = nil
            do { _ = try await ImagePuller(client: client).pull(reference, to: tmp.sub("rootfs-" + credentials.password)) } catch { failure = error }
            await client.shutdown()
            #expect((failure == nil) == (credentials.password == password), "\(String(describing: failure))")
            if let failure { #expect(!failure.description.contains(wrong)) }
        }
        let lines = captured.lines
        #expect(lines.contains { $0.contains("/v2/busybox/manifests/latest") }, "the requests are logged: \(lines)")
        for secret in [password, wrong] + tokens.tokens {
            #expect(!lines.contains { $0.contains(secret) }, "a secret in the log")
        }
    }

    @Test func pushAsksForPushScope() throws {
        tokens.reset()
        let tmp = TempDir("token-push")
        var r = try RegistryTools.layertool(["unpack", "--image", RegistryTools.busyboxLayout + ":latest", "--name", "busybox", "--root", tmp.sub("store")])
        try #require(r.status == 0, "\(r.stderr)")
        r = try RegistryTools.layertool(["push", "--root", tmp.sub("store"), "--plain-http", "--creds", "\(user):\(password)", "busybox", "\(registry)/team/pushed:v1"])
        try #require(r.status == 0, "push: \(r.stderr)")
        #expect(tokens.requests.contains(["repository:team/pushed:pull,push"]), "\(tokens.requests)")
        for token in tokens.tokens { #expect(!r.stdout.contains(token) && !r.stderr.contains(token)) }
        r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(password)", "\(registry)/team/pushed:v1", tmp.sub("rootfs")])
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func wrongPasswordIsOneLineWithoutTheSecretTheServerEchoes() throws {
        tokens.reset()
        let tmp = TempDir("token-wrong")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(wrong)", "\(registry)/busybox:latest", tmp.sub("rootfs")])
        // The token server's message quotes the password; layertool must not pass it on.
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: ["UNAUTHORIZED", "login refused for \(user)", "<redacted>", "(HTTP 401)"], secrets: [wrong])
    }

    @Test func anonymousIsRefusedInOneLine() throws {
        tokens.reset()
        let tmp = TempDir("token-anonymous")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/busybox:latest", tmp.sub("rootfs")])
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: ["\(registry)/busybox:latest", "(HTTP 401)"])
        for token in tokens.tokens { #expect(!r.stderr.contains(token)) }
    }
}

@Suite(.serialized, .enabled(if: haveRegistryPeers && RegistryTools.haveOpenSSL, "needs docker-registry, skopeo and openssl"),
       .registryEnvironment(.tls, available: haveRegistryPeers && RegistryTools.haveOpenSSL))
struct RegistryTLSTests {
    var environment: RegistryEnvironment { RegistryEnvironment.current! }
    var registry: String { environment.registry.host }

    @Test func certDirWithTheCAAndAClientCertificate() throws {
        let tmp = TempDir("tls-certdir")
        let r = try RegistryTools.layertool(["pull", "--cert-dir", environment.clientCertDir!, "\(registry)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: tmp.sub("rootfs/bin/busybox")))
    }

    @Test func untrustedCertificateIsOneLine() throws {
        let tmp = TempDir("tls-untrusted")
        let r = try RegistryTools.layertool(["pull", "\(registry)/busybox:latest", tmp.sub("rootfs")])
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: ["\(registry)/busybox:latest", "TLS", "CERTIFICATE_VERIFY_FAILED"])
    }

    @Test func tlsVerifyFalseStillSendsTheClientCertificate() throws {
        let tmp = TempDir("tls-noverify")
        let clientOnly = tmp.mkdir("client-only")
        for name in ["client.cert", "client.key"] {
            try FileManager.default.copyItem(atPath: environment.clientCertDir! + "/" + name, toPath: clientOnly + "/" + name)
        }
        var r = try RegistryTools.layertool(["pull", "--tls-verify=false", "--cert-dir", clientOnly, "\(registry)/busybox:latest", tmp.sub("rootfs")])
        #expect(r.status == 0, "pull: \(r.stderr)")
        // Without the client certificate the registry ends the handshake.
        r = try RegistryTools.layertool(["pull", "--tls-verify=false", "\(registry)/busybox:latest", tmp.sub("rootfs2")])
        expectRefused(r, dest: tmp.sub("rootfs2"), mentioning: ["\(registry)/busybox:latest"])
    }

    @Test func certsDirectoryRootsPerHostAndPort() async throws {
        let tmp = TempDir("tls-certsd")
        let perHost = tmp.mkdir("certs.d/" + registry)
        for name in ["ca.crt", "client.cert", "client.key"] {
            try FileManager.default.copyItem(atPath: environment.clientCertDir! + "/" + name, toPath: perHost + "/" + name)
        }
        _ = tmp.mkdir("empty-root")
        let tls = RegistryTLSSettings(certificateRoots: [tmp.sub("empty-root"), tmp.sub("certs.d")])
        #expect(tls.directory(forHost: registry) == perHost)
        let client = try RegistryClient(registry: registry, options: RegistryClientOptions(tls: tls))
        do {
            let image = try await client.resolveImage(try ImageReference(parsing: "\(registry)/busybox:latest"))
            #expect(image.layers.count == 2)
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }

    @Test func aClientKeyWithoutItsCertificateIsRefused() throws {
        let tmp = TempDir("tls-badcertdir")
        let dir = tmp.mkdir("certs")
        try FileManager.default.copyItem(atPath: environment.clientCertDir! + "/client.key", toPath: dir + "/client.key")
        let r = try RegistryTools.layertool(["pull", "--cert-dir", dir, "\(registry)/busybox:latest", tmp.sub("rootfs")])
        expectRefused(r, dest: tmp.sub("rootfs"), mentioning: ["client.key", "without its certificate"])
    }
}

/// Log lines captured from the client's `Logger`.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var captured = [String]()
    func append(_ line: String) {
        lock.lock()
        captured.append(line)
        lock.unlock()
    }
    var lines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return captured
    }
}

struct CapturingLogHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        log.append("\(event.level) \(event.message) \(metadata.merging(event.metadata ?? [:]) { $1 }) \(event.error.map { "\($0)" } ?? "")")
    }
}
