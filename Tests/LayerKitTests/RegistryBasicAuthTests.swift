import Foundation
import LayerKit
import LayerKitRegistry
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Basic auth (htpasswd) against a real registry: wrong and missing credentials, credentials from
// --creds, --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR and ~/.docker/config.json in order,
// a redirect to another host that must not get the credentials, and push. No password may ever
// show in what layertool prints.

/// An auth file with `auths[key].auth = base64(user:password)`.
private func writeAuthFile(_ path: String, key: String, user: String, password: String) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let auth = Data("\(user):\(password)".utf8).base64EncodedString()
    try JSON.write(["auths": [key: ["auth": auth]]], to: path)
}

@Suite(.serialized, .requires(RegistryEnvironment.Kind.basicAuth.requirements), .registryEnvironment(.basicAuth))
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
        func pull(_ flags: [String], environment: [String: String], _ name: String) throws -> ProcessResult {
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
        let layer = BusyboxFixture.layerDigests[0]
        let blob = Array(try Data(contentsOf: URL(fileURLWithPath: BusyboxFixture.layerBlob(0))))
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
        var r = try RegistryTools.layertool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "busybox", "--root", tmp.sub("store")])
        try #require(r.status == 0, "\(r.stderr)")
        r = try RegistryTools.layertool(["push", "--root", tmp.sub("store"), "--plain-http", "--creds", "\(user):\(wrong)", "busybox", "\(registry)/pushed:v1"])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && !r.stderr.contains(wrong), "\(r.stderr)")
        r = try RegistryTools.layertool(["push", "--root", tmp.sub("store"), "--plain-http", "--creds", "\(user):\(password)", "busybox", "\(registry)/pushed:v1"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try RegistryTools.layertool(["pull", "--plain-http", "--creds", "\(user):\(password)", "\(registry)/pushed:v1", tmp.sub("rootfs")])
        #expect(r.status == 0, "\(r.stderr)")
    }
}
