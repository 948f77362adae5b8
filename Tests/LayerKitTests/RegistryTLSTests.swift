import Foundation
import LayerKit
import LayerKitRegistry
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

// TLS with a CA made by the test, client certificates required: --cert-dir, certs.d roots per
// host and port, --tls-verify=false still sending the client certificate, bad cert dirs refused.

@Suite(.serialized, .requires(RegistryEnvironment.Kind.tls.requirements), .registryEnvironment(.tls))
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
