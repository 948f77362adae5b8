import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

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
    private let process: BackgroundProcess
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
        let process = try BackgroundProcess(try requireTool("docker-registry"), ["serve", dir.sub("config.yml")],
                                            logPath: dir.sub("registry.log"))
        self.process = process
        // Bounded wait for the listener (the registry starts in well under a second).
        let port = self.port
        guard process.waitUntil(seconds: 20, { RegistryTools.isListening(port) }) else {
            stop()
            throw RegistryTestError("docker-registry did not start: \(process.output)")
        }
    }

    /// SIGTERM, and a bounded wait for the exit (the process is killed when the object goes if
    /// it is still running).
    func stop() {
        if process.process.isRunning {
            process.signal(SIGTERM)
            _ = process.waitForExit(seconds: 30)
        }
    }

    deinit { stop() }
}
