import Foundation
import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// How to talk TLS to a registry: the system's CAs, plus the per-registry CAs and client
/// certificate of the Docker/podman layout, or none of that with `verifyCertificates = false`.
///
/// The per-registry dir is `ROOT/HOST[:PORT]/` under the first of `certificateRoots` that has one
/// (by default `/etc/containers/certs.d` then `/etc/docker/certs.d`), or `certificateDirectory`
/// itself when set (`--cert-dir`). In it: `*.crt` files are CAs (each may hold several PEM
/// certificates); `NAME.cert` with `NAME.key` is a client certificate and its key.
public struct RegistryTLSSettings: Sendable, Equatable {
    /// Verify the registry's certificate (`--tls-verify=false` turns this off).
    public var verifyCertificates: Bool
    /// A dir holding this registry's CAs and client certificate (`--cert-dir`); replaces the lookup
    /// under `certificateRoots`.
    public var certificateDirectory: String?
    /// Where `HOST[:PORT]` dirs are looked for.
    public var certificateRoots: [String]

    /// podman's and Docker's per-registry certificate roots, in the order they are searched.
    public static let defaultCertificateRoots = ["/etc/containers/certs.d", "/etc/docker/certs.d"]

    /// Defaults: verify, look up the registry's dir under the default roots.
    public init(verifyCertificates: Bool = true, certificateDirectory: String? = nil,
                certificateRoots: [String] = RegistryTLSSettings.defaultCertificateRoots) {
        self.verifyCertificates = verifyCertificates
        self.certificateDirectory = certificateDirectory
        self.certificateRoots = certificateRoots
    }

    /// The dir that applies to `host` (`HOST` or `HOST:PORT`, as the reference names it), if any.
    public func directory(forHost host: String) -> String? {
        if let certificateDirectory { return certificateDirectory }
        for root in certificateRoots {
            let dir = root + "/" + host
            var st = stat()
            if stat(dir, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { return dir }
        }
        return nil
    }

    /// The TLS configuration for requests to `host`.
    func configuration(forHost host: String) throws(RegistryError) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if !verifyCertificates { tls.certificateVerification = .none }
        guard let dir = directory(forHost: host) else { return tls }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted() } catch {
            throw RegistryError(.configuration, reference: dir, "cannot list the certificate directory")
        }
        var authorities = [NIOSSLCertificate]()
        for name in names where name.hasSuffix(".crt") {
            do { authorities += try NIOSSLCertificate.fromPEMFile(dir + "/" + name) } catch {
                throw RegistryError(.tls, reference: dir + "/" + name, "not a PEM certificate file (\(error))")
            }
        }
        if !authorities.isEmpty { tls.additionalTrustRoots = [.certificates(authorities)] }
        let certificates = names.filter { $0.hasSuffix(".cert") }
        for name in names where name.hasSuffix(".key") {
            let base = String(name.dropLast(".key".count))
            guard certificates.contains(base + ".cert") else {
                throw RegistryError(.tls, reference: dir + "/" + name, "a client key without its certificate \(base).cert")
            }
        }
        guard let certificate = certificates.first else { return tls }
        guard certificates.count == 1 else {
            throw RegistryError(.tls, reference: dir, "more than one client certificate: \(certificates.joined(separator: ", "))")
        }
        let base = String(certificate.dropLast(".cert".count))
        guard names.contains(base + ".key") else {
            throw RegistryError(.tls, reference: dir + "/" + certificate, "a client certificate without its key \(base).key")
        }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(dir + "/" + certificate)
            tls.certificateChain = chain.map { .certificate($0) }
        } catch {
            throw RegistryError(.tls, reference: dir + "/" + certificate, "not a PEM certificate file (\(error))")
        }
        do {
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: dir + "/" + base + ".key", format: .pem))
        } catch {
            // The key's bytes never reach the message.
            throw RegistryError(.tls, reference: dir + "/" + base + ".key", "not a readable PEM private key")
        }
        return tls
    }
}
