import Foundation
import LayerKit
import LayerKitRegistry
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Token auth with the test's token server (tokens signed with a key whose certificate is the
// registry's rootcertbundle): one token per scope, a refused token fetched again, push scope, and
// no password or token in the output or the client's log.

@Suite(.serialized, .requires(RegistryEnvironment.Kind.tokenAuth.requirements), .registryEnvironment(.tokenAuth))
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
        var r = try RegistryTools.layertool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "busybox", "--root", tmp.sub("store")])
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
