import ArgumentParser
import Foundation
import LayerKit
import LayerKitRegistry
#if canImport(Glibc)
import Glibc
#endif

/// The registry flags `pull` and `push` share: credentials, certificates, TLS.
struct RegistryFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Credentials for the registry (without :PASSWORD, asked for on the terminal).", valueName: "USER[:PASSWORD]"))
    var creds: String?

    @Option(help: ArgumentHelp("An auth file (containers-auth.json or Docker's config.json form), searched before $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json and ~/.docker/config.json.", valueName: "FILE"))
    var authfile: String?

    @Option(name: .customLong("cert-dir"), help: ArgumentHelp("CAs (*.crt) and a client certificate (client.cert + client.key) for this registry, instead of /etc/containers/certs.d/HOST:PORT or /etc/docker/certs.d/HOST:PORT.", valueName: "DIR"))
    var certDir: String?

    @Option(name: .customLong("tls-verify"), help: ArgumentHelp("Verify the registry's certificate (--tls-verify=false to skip).", valueName: "true|false"))
    var tlsVerify: Bool = true

    @Flag(name: .customLong("plain-http"), help: "Talk plain HTTP to the registry (no TLS).")
    var plainHTTP = false

    /// The client options for `reference`'s registry, credentials looked up in the environment's order.
    func clientOptions(for reference: ImageReference) throws(RegistryError) -> RegistryClientOptions {
        var explicit: RegistryCredentials? = nil
        if let creds {
            if creds.contains(":") {
                explicit = try RegistryCredentials(parsing: creds)
            } else {
                guard isatty(0) == 1, let entered = getpass("Password for \(creds)@\(reference.registry): ") else {
                    throw RegistryError(.configuration, "--creds USER without a password needs a terminal to ask for it")
                }
                explicit = RegistryCredentials(username: creds, password: String(cString: entered))
            }
        }
        let files = CredentialLookup.authFiles(authFile: authfile, environment: ProcessInfo.processInfo.environment)
        let credentials = try CredentialLookup.credentials(for: reference, explicit: explicit, files: files)
        return RegistryClientOptions(credentials: credentials, plainHTTP: plainHTTP,
                                     tls: RegistryTLSSettings(verifyCertificates: tlsVerify, certificateDirectory: certDir))
    }
}

/// Runs a registry operation in a task that Ctrl-C (SIGINT) or SIGTERM cancels (the operation
/// then removes whatever it had started); its error becomes one line on stderr with exit status 1
/// (130 when interrupted).
func runRegistryOperation<T: Sendable>(_ operation: @escaping @Sendable () async throws(RegistryError) -> T) async throws -> T {
    let task = Task { () async -> Result<T, RegistryError> in
        do throws(RegistryError) { return .success(try await operation()) } catch { return .failure(error) }
    }
    var sources = [DispatchSourceSignal]()
    for signalNumber in [SIGINT, SIGTERM] {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler { task.cancel() }
        source.resume()
        sources.append(source)
    }
    let result = await task.value
    for source in sources { source.cancel() }
    signal(SIGINT, SIG_DFL)
    signal(SIGTERM, SIG_DFL)
    switch result {
    case .success(let value):
        return value
    case .failure(let error):
        Output.endProgress()
        FileHandle.standardError.write(Data("layertool: \(error.description)\n".utf8))
        throw ExitCode(error.kind == .cancelled ? 130 : 1)
    }
}
