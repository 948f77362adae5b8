import Foundation
import LayerKit
@testable import LayerKitRegistry
import Testing

// The parts of the registry client that need no server: Docker's reference grammar, platform
// selection from an index, WWW-Authenticate parsing, the credential search order and auth file
// forms, secrets kept out of descriptions, Retry-After, and the registry's error JSON made into
// one safe line.

@Suite struct RegistryUnitTests {
    struct ReferenceCase: Sendable, CustomTestStringConvertible {
        var text: String
        var registry: String
        var repository: String
        var tag: String?
        var digest: String?
        var testDescription: String { text }
    }

    static let digest = "sha256:" + String(repeating: "0123456789abcdef", count: 4)

    static let goodReferences: [ReferenceCase] = [
        .init(text: "busybox", registry: "docker.io", repository: "library/busybox", tag: "latest"),
        .init(text: "busybox:1.36", registry: "docker.io", repository: "library/busybox", tag: "1.36"),
        .init(text: "team/app", registry: "docker.io", repository: "team/app", tag: "latest"),
        .init(text: "docker.io/busybox", registry: "docker.io", repository: "library/busybox", tag: "latest"),
        .init(text: "index.docker.io/team/app:v1", registry: "docker.io", repository: "team/app", tag: "v1"),
        .init(text: "localhost/app", registry: "localhost", repository: "app", tag: "latest"),
        .init(text: "localhost:5000/app:v2", registry: "localhost:5000", repository: "app", tag: "v2"),
        .init(text: "127.0.0.1:5000/a/b/c:tag_1.x-y", registry: "127.0.0.1:5000", repository: "a/b/c", tag: "tag_1.x-y"),
        .init(text: "registry.example/app", registry: "registry.example", repository: "app", tag: "latest"),
        .init(text: "[::1]:5000/app", registry: "[::1]:5000", repository: "app", tag: "latest"),
        .init(text: "Registry/app", registry: "Registry", repository: "app", tag: "latest"),
        .init(text: "a.b/x__y/z-----w.v:T", registry: "a.b", repository: "x__y/z-----w.v", tag: "T"),
        .init(text: "app@\(digest)", registry: "docker.io", repository: "library/app", tag: nil, digest: digest),
        .init(text: "host:1/app:v1@\(digest)", registry: "host:1", repository: "app", tag: "v1", digest: digest),
    ]

    @Test(arguments: goodReferences)
    func parsesReferences(_ c: ReferenceCase) throws {
        let r = try ImageReference(parsing: c.text)
        #expect(r.registry == c.registry)
        #expect(r.repository == c.repository)
        #expect(r.tag == c.tag)
        #expect(r.digest?.description == c.digest)
        #expect(try ImageReference(parsing: r.description) == r, "the canonical form parses back to the same reference")
    }

    @Test(arguments: [
        "", "team/UPPER", "app:", "app:-tag", "app:.tag", "app:" + String(repeating: "t", count: 129), "app@sha256:abc",
        "app@md5:0123", "a//b", "/app", "app/", "a_-b", "host:99999/app", "host:/app", "app name", "app\u{7f}",
        "r.io/" + String(repeating: "a", count: 260), "-app", "app-", "a..b", "a___b",
    ])
    func refusesBadReferences(_ text: String) {
        #expect(throws: RegistryError.self) { try ImageReference(parsing: text) }
        do { _ = try ImageReference(parsing: text) } catch {
            #expect(error.kind == .invalidReference)
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func apiHostOfDockerHub() throws {
        #expect(try ImageReference(parsing: "busybox").apiHost == "registry-1.docker.io")
        #expect(try ImageReference(parsing: "localhost:5000/x").apiHost == "localhost:5000")
    }

    // MARK: Platforms

    static func entry(_ os: String, _ arch: String, _ variant: String? = nil, _ n: UInt8) throws -> Descriptor {
        let json = #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\#(String(repeating: String(format: "%02x", n), count: 32))","size":1,"platform":{"os":"\#(os)","architecture":"\#(arch)"\#(variant.map { #","variant":"\#($0)""# } ?? "")}}"#
        return try JSONDecoder().decode(Descriptor.self, from: Data(json.utf8))
    }

    @Test func selectsThePlatformFromAnIndex() throws {
        let index = [try Self.entry("linux", "arm", "v6", 1), try Self.entry("linux", "arm", "v7", 2), try Self.entry("linux", "arm64", "v8", 3),
                     try Self.entry("linux", "amd64", nil, 4), try Self.entry("windows", "amd64", nil, 5), try Self.entry("unknown", "unknown", nil, 6)]
        func pick(_ text: String) throws -> UInt8? {
            try Platform(parsing: text).select(from: index).map { $0.digest.bytes[0] }
        }
        #expect(try pick("linux/amd64") == 4)
        #expect(try pick("linux/arm64") == 3)
        #expect(try pick("linux/arm64/v8") == 3)
        #expect(try pick("linux/arm") == 2, "arm without a variant prefers v7")
        #expect(try pick("linux/arm/v6") == 1)
        #expect(try pick("windows/amd64") == 5)
        #expect(try pick("linux/s390x") == nil)
        #expect(try pick("linux/x86_64") == 4, "uname's name for amd64")
        #expect(throws: RegistryError.self) { try Platform(parsing: "linux") }
        #expect(throws: RegistryError.self) { try Platform(parsing: "linux/amd64/v1/x") }
        #expect(Platform.host.os == "linux")
    }

    // MARK: Challenges

    @Test func parsesChallenges() {
        let bearer = AuthChallenge.parse(#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#)
        #expect(bearer == [AuthChallenge(scheme: .bearer, parameters: ["realm": "https://auth.example/token", "service": "registry.example",
                                                                      "scope": "repository:a/b:pull,push"])])
        let two = AuthChallenge.parse(#"Basic realm="x \"quoted\"", Bearer realm=https://a/t,error="insufficient_scope""#)
        #expect(two.count == 2)
        #expect(two[0] == AuthChallenge(scheme: .basic, parameters: ["realm": #"x "quoted""#]))
        #expect(two[1].parameters["realm"] == "https://a/t" && two[1].parameters["error"] == "insufficient_scope")
        #expect(AuthChallenge.parse("").isEmpty)
        #expect(AuthChallenge.parse("Negotiate") == [AuthChallenge(scheme: .other("Negotiate"), parameters: [:])])
    }

    // MARK: Credentials

    @Test func searchPathFollowsTheDocumentedOrderFromTheGivenEnvironment() {
        let files = CredentialLookup.authFiles(authFile: "/given.json", environment: [
            "REGISTRY_AUTH_FILE": "/env.json", "XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/u"])
        #expect(files == ["/given.json", "/env.json", "/run/user/7/containers/auth.json", "/home/u/.docker/config.json"])
        #expect(CredentialLookup.authFiles(environment: [:]).isEmpty)
    }

    @Test func readsAuthFileForms() throws {
        let tmp = TempDir("auth-files")
        let b64 = Data("bob:pa:ss".utf8).base64EncodedString()
        try #"""
            {"auths": {
              "https://index.docker.io/v1/": {"auth": "\#(Data("hub:hubpass".utf8).base64EncodedString())"},
              "registry.example": {"auth": "\#(b64)"},
              "registry.example/team/special": {"username": "carol", "password": "cpass"},
              "http://localhost:5000/": {"auth": "\#(Data("loc:lpass".utf8).base64EncodedString())"}
            }, "credsStore": "desktop"}
            """#.write(toFile: tmp.sub("a.json"), atomically: true, encoding: .utf8)
        func lookup(_ ref: String) throws -> RegistryCredentials? {
            try CredentialLookup.credentials(for: try ImageReference(parsing: ref), files: [tmp.sub("missing.json"), tmp.sub("a.json")])
        }
        #expect(try lookup("busybox") == RegistryCredentials(username: "hub", password: "hubpass"))
        #expect(try lookup("registry.example/app") == RegistryCredentials(username: "bob", password: "pa:ss"))
        #expect(try lookup("registry.example/team/special/sub:v1") == RegistryCredentials(username: "carol", password: "cpass"))
        #expect(try lookup("localhost:5000/x") == RegistryCredentials(username: "loc", password: "lpass"))
        #expect(try lookup("other.example/x") == nil)
        let explicit = RegistryCredentials(username: "me", password: "mine")
        #expect(try CredentialLookup.credentials(for: try ImageReference(parsing: "registry.example/app"), explicit: explicit, files: [tmp.sub("a.json")]) == explicit)
    }

    @Test func credentialsNeverShowTheirSecret() throws {
        let credentials = try RegistryCredentials(parsing: "user:hunter2-secret")
        #expect(credentials.password == "hunter2-secret")
        for text in [credentials.description, credentials.debugDescription, "\(credentials)", String(reflecting: credentials)] {
            #expect(!text.contains("hunter2"), "\(text)")
        }
        #expect(throws: RegistryError.self) { try RegistryCredentials(parsing: "nopassword") }
        #expect(throws: RegistryError.self) { try RegistryCredentials(parsing: ":pass") }
        let redactor = SecretRedactor()
        redactor.add("hunter2-secret")
        #expect(redactor.clean("bad password hunter2-secret!") == "bad password <redacted>!")
    }

    @Test func base64RoundTrips() {
        for text in ["", "a", "ab", "abc", "user:pässword", String(repeating: "x", count: 1000)] {
            let encoded = Base64.encode(Array(text.utf8))
            #expect(encoded == Data(text.utf8).base64EncodedString())
            #expect(Base64.decode(encoded) == Array(text.utf8))
        }
        #expect(Base64.decode("a") == nil)
        #expect(Base64.decode("ab$c") == nil)
    }

    // MARK: Retries and errors

    @Test func retryAfterAndBackoff() {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        #expect(RetryPolicy.parseRetryAfter("7", now: now) == 7)
        #expect(RetryPolicy.parseRetryAfter("Tue, 14 Nov 2023 22:13:40 GMT", now: now) == 20)
        #expect(RetryPolicy.parseRetryAfter("Tue, 14 Nov 2023 22:00:00 GMT", now: now) == 0)
        #expect(RetryPolicy.parseRetryAfter("soon", now: now) == nil)
        let policy = RetryPolicy(initialDelay: .milliseconds(100), maximumDelay: .milliseconds(350), maximumRetryAfter: .seconds(5))
        #expect(policy.delay(after: 1, retryAfter: nil) == .milliseconds(100))
        #expect(policy.delay(after: 2, retryAfter: nil) == .milliseconds(200))
        #expect(policy.delay(after: 3, retryAfter: nil) == .milliseconds(350))
        #expect(policy.delay(after: 1, retryAfter: "2") == .seconds(2))
        #expect(policy.delay(after: 1, retryAfter: "3600") == .seconds(5))
    }

    @Test func registryErrorJSONBecomesOneSafeLine() {
        let body = Array(#"{"errors":[{"code":"DENIED","message":"no\u001b[2J\nway\r"},{"code":"X","message":"y"}]}"#.utf8)
        let parsed = RegistryErrorResponse.parse(body)
        #expect(parsed?.code == "DENIED")
        #expect(parsed?.message == "no [2J way (and 1 more)")
        #expect(RegistryErrorResponse.parse(Array("<html>".utf8)) == nil)
        let error = RegistryError(.denied, reference: "r.example/app:v1", code: "DENIED", status: 403, "requested access to the resource is denied")
        #expect(error.description == "r.example/app:v1: DENIED: requested access to the resource is denied (HTTP 403)")
        #expect(RegistryErrorResponse.sanitize(String(repeating: "é", count: 400), limit: 10).count == 11)
    }

    @Test func schema1AndUnknownManifestsAreRefused() throws {
        let schema1 = Array(#"{"schemaVersion":1,"name":"x"}"#.utf8)
        #expect(throws: RegistryError.self) { try RegistryClient.manifestMediaType(contentType: "application/json", bytes: schema1, reference: "r") }
        #expect(throws: RegistryError.self) { try RegistryClient.manifestMediaType(contentType: "application/vnd.docker.distribution.manifest.v1+prettyjws", bytes: Array("{}".utf8), reference: "r") }
        let index = Array(#"{"schemaVersion":2,"manifests":[]}"#.utf8)
        #expect(try RegistryClient.manifestMediaType(contentType: nil, bytes: index, reference: "r") == MediaType.ociIndex)
        let lying = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.utf8)
        #expect(throws: RegistryError.self) { try RegistryClient.manifestMediaType(contentType: MediaType.ociManifest, bytes: lying, reference: "r") }
        #expect(RegistryClient.rangeStart("bytes 100-199/200") == 100)
        #expect(RegistryClient.rangeEnd("0-1048575") == 1048575)
    }
}
