import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

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

        /// What the environment needs: docker-registry, skopeo (to push the fixture), and htpasswd
        /// (apache2-utils) for Basic auth or openssl for the certificates and the token signer.
        var requirements: [Requirement] {
            switch self {
            case .plain: return [.tools("docker-registry", "skopeo")]
            case .basicAuth: return [.tools("docker-registry", "skopeo", "htpasswd")]
            case .tls, .tokenAuth: return [.tools("docker-registry", "skopeo", "openssl")]
            }
        }
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
            let r = try run(try requireTool("htpasswd"), ["-B", "-b", "-c", file, Self.user, Self.password])
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
        var r = try RegistryTools.layertool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "busybox", "--root", store])
        try #require(r.status == 0, "import: \(r.stderr)")
        r = try RegistryTools.layertool(["export", "--gzip", "--root", store, "busybox", gzipLayout + ":latest"])
        try #require(r.status == 0, "export: \(r.stderr)")
        for (layout, name) in [(BusyboxFixture.layout, "busybox"), (gzipLayout, "busybox-gz")] {
            r = try RegistryTools.run(try requireTool("skopeo"), ["copy", "--quiet"] + skopeoDestinationFlags
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

/// Starts a `RegistryEnvironment` for a whole suite. Where its requirements are missing nothing is
/// started: the suite's `.requires(kind.requirements)` skips it, saying what is missing.
struct RegistryEnvironmentTrait: SuiteTrait, TestScoping {
    let kind: RegistryEnvironment.Kind

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard kind.requirements.allSatisfy({ $0.skipReason == nil }) else { return try await function() }
        let environment = try RegistryEnvironment(kind)
        defer { environment.stop() }
        try await RegistryEnvironment.$current.withValue(environment) { try await function() }
    }
}

extension Trait where Self == RegistryEnvironmentTrait {
    /// The registry environment of `kind`, up for the whole suite.
    static func registryEnvironment(_ kind: RegistryEnvironment.Kind) -> Self {
        RegistryEnvironmentTrait(kind: kind)
    }
}
