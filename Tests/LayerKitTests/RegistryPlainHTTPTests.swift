import Foundation
import LayerKit
import LayerKitRegistry
import Testing
#if canImport(Glibc)
import Glibc
#endif

// layertool pull and push against a real registry (Debian's docker-registry, CNCF distribution
// 2.8) over plain HTTP, with skopeo and umoci as the peers, and faults injected by a proxy in
// front of the registry: a connection dropped mid-blob, a 500, a 429, a corrupted blob, an
// oversized manifest, a schema 1 manifest, a missing tag, Ctrl-C.
//
// The registry, the proxy and the pushed fixture are set up once for the suite; the tests run
// one at a time because they share the proxy's fault rules.

@Suite(.serialized, .requires(RegistryEnvironment.Kind.plain.requirements), .registryEnvironment(.plain))
struct RegistryPlainHTTPTests {
    var environment: RegistryEnvironment { RegistryEnvironment.current! }
    var registry: String { environment.registry.host }
    var proxy: FaultProxy { environment.proxy! }

    /// The fixture's first layer (gzip), the one the faults are injected into.
    static let busyboxLayer1 = BusyboxFixture.layerDigests[0]
    static let busyboxLayer1Size = BusyboxFixture.layerSizes[0]

    func localUnpack(_ layout: String, into dest: String) throws {
        let r = try RegistryTools.layertool(["unpack", "--image", layout + ":latest", dest])
        try #require(r.status == 0, "layertool unpack: \(r.stderr)")
    }

    /// Expects a failed pull: status 1, one line naming what failed, DEST not created, nothing left beside it.
    func expectCleanFailure(_ r: ProcessResult, dest: String, mentioning words: [String],
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, "exit status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "expected one line, got: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.hasPrefix("layertool: "), sourceLocation: sourceLocation)
        for word in words { #expect(r.stderr.contains(word), "\"\(word)\" missing from: \(r.stderr)", sourceLocation: sourceLocation) }
        #expect(access(dest, F_OK) != 0, "DEST was created", sourceLocation: sourceLocation)
        let parent = (dest as NSString).deletingLastPathComponent
        #expect(RegistryEnvironment.leftovers(in: parent).isEmpty, "left behind: \(RegistryEnvironment.leftovers(in: parent))", sourceLocation: sourceLocation)
        #expect(r.stdout.isEmpty, sourceLocation: sourceLocation)
    }

    // MARK: Interop

    @Test(.requires(.root(because: "umoci without root needs --rootless, which changes ownership by design"), .tools("umoci")))
    func imagePushedBySkopeoPullsToWhatUmociUnpacks() throws {
        let tmp = TempDir("registry-interop")
        let umoci = try run(try requireTool("umoci"), ["unpack", "--image", environment.gzipLayout + ":latest", tmp.sub("bundle")])
        try #require(umoci.status == 0, "umoci: \(umoci.stderr)")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/busybox-gz:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        RegistryTools.expectSameTree(tmp.sub("bundle/rootfs"), "umoci unpack", tmp.sub("rootfs"))
    }

    @Test func pullEqualsTheLocalUnpackAndReportsTheFixtureDigests() throws {
        let tmp = TempDir("registry-pull")
        try localUnpack(BusyboxFixture.layout, into: tmp.sub("local"))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "--json", "--max-concurrent-downloads", "1",
                                             "\(registry)/busybox", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        RegistryTools.expectSameTree(tmp.sub("local"), "layertool unpack of the layout", tmp.sub("rootfs"))
        let pulled = try r.json(LayertoolOutput.Pull.self)
        #expect(pulled.manifestDigest == BusyboxFixture.manifestDigest)
        #expect(pulled.reference == "\(registry)/busybox:latest")
        #expect(pulled.layers.map(\.blobDigest) == BusyboxFixture.layerDigests)
        #expect(pulled.layers.map(\.diffID) == BusyboxFixture.diffIDs)
    }

    @Test func pullByDigestAndIntoAnExistingNonEmptyDestination() throws {
        let tmp = TempDir("registry-pull-digest")
        let dest = tmp.mkdir("rootfs")
        try "kept\n".write(toFile: dest + "/already-here", atomically: true, encoding: .utf8)
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/busybox@\(BusyboxFixture.manifestDigest)", dest])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dest + "/already-here"))
        #expect(FileManager.default.fileExists(atPath: dest + "/bin/busybox"))
    }

    @Test(.requires(.root(because: "umoci without root needs --rootless, which changes ownership by design"), .tools("umoci")))
    func imagePushedByLayertoolIsPulledBySkopeoAndReadByUmoci() throws {
        let tmp = TempDir("registry-push")
        let store = tmp.sub("store")
        // The fixture as imported (its second layer is zstd) and a gzip-only copy for umoci.
        var r = try RegistryTools.layertool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "busybox", "--root", store])
        try #require(r.status == 0, "\(r.stderr)")
        r = try RegistryTools.layertool(["unpack", "--image", environment.gzipLayout + ":latest", "--name", "busybox-gz", "--root", store])
        try #require(r.status == 0, "\(r.stderr)")

        r = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "busybox", "\(registry)/pushed/busybox:v1"])
        try #require(r.status == 0, "push: \(r.stderr)")
        // The manifest goes up byte for byte: same digest as the layout's.
        #expect(r.stdout == BusyboxFixture.manifestDigest + "\n")
        r = try RegistryTools.run(try requireTool("skopeo"), ["copy", "--quiet", "--src-tls-verify=false", "docker://\(registry)/pushed/busybox:v1", "oci:\(tmp.sub("copy")):v1"])
        try #require(r.status == 0, "skopeo copy: \(r.stderr)")
        let index = try String(contentsOfFile: tmp.sub("copy/index.json"), encoding: .utf8)
        #expect(index.contains(BusyboxFixture.manifestDigest))

        r = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "--json", "busybox-gz", "\(registry)/pushed/busybox-gz:v1"])
        try #require(r.status == 0, "push: \(r.stderr)")
        r = try RegistryTools.run(try requireTool("skopeo"), ["copy", "--quiet", "--src-tls-verify=false", "docker://\(registry)/pushed/busybox-gz:v1", "oci:\(tmp.sub("copy-gz")):v1"])
        try #require(r.status == 0, "skopeo copy: \(r.stderr)")
        let umoci = try run(try requireTool("umoci"), ["unpack", "--image", tmp.sub("copy-gz") + ":v1", tmp.sub("bundle")])
        try #require(umoci.status == 0, "umoci: \(umoci.stderr)")
        try localUnpack(BusyboxFixture.layout, into: tmp.sub("local"))
        RegistryTools.expectSameTree(tmp.sub("local"), "layertool unpack of the fixture", tmp.sub("bundle/rootfs"), "umoci unpack of the pushed image")
    }

    /// An image pushed by layertool (its second layer zstd) is pulled by containerd's `ctr` into
    /// its own overlayfs snapshotter and run with runc: both layers read, the whiteout honoured.
    @Test(.requires(.root(because: "containerd and runc run containers as root"), .tools("containerd", "ctr", "runc")))
    func imagePushedByLayertoolIsPulledAndRunByContainerd() throws {
        let tmp = TempDir("registry-ctr")
        let store = tmp.sub("store")
        var r = try RegistryTools.layertool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "busybox", "--root", store])
        try #require(r.status == 0, "\(r.stderr)")
        let reference = "\(registry)/ctr/busybox:v1"
        r = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "busybox", reference])
        try #require(r.status == 0, "push: \(r.stderr)")

        let containerd = try ContainerdEnvironment()
        r = try containerd.ctr(["images", "pull", "--plain-http", reference])
        try #require(r.status == 0, "ctr images pull: \(r.stderr)\n\(containerd.daemonLog.suffix(4000))")
        r = try containerd.ctr(["run", "--rm", reference, "from-registry", "/bin/sh", "-c", ContainerdEnvironment.runScript])
        #expect(r.status == 0, "ctr run: \(r.stderr)")
        #expect(r.stdout == ContainerdEnvironment.runOutput)
    }

    @Test func pushSkipsPresentBlobsAndMountsFromAnotherRepository() throws {
        let tmp = TempDir("registry-mount")
        let store = tmp.sub("store")
        var r = try RegistryTools.layertool(["unpack", "--image", BusyboxFixture.layout + ":latest", "--name", "busybox", "--root", store])
        try #require(r.status == 0, "\(r.stderr)")
        func outcomes(_ output: String) throws -> [String] {
            try JSON.decode(LayertoolOutput.Push.self, from: output).blobs.map(\.outcome)
        }
        r = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "--json", "busybox", "\(registry)/mount-source/busybox:v1"])
        try #require(r.status == 0, "\(r.stderr)")
        #expect(try outcomes(r.stdout) == ["uploaded", "uploaded", "uploaded"])
        r = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "--json", "busybox", "\(registry)/mount-source/busybox:v2"])
        try #require(r.status == 0, "\(r.stderr)")
        #expect(try outcomes(r.stdout) == ["present", "present", "present"])
        r = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "--json", "--mount-from", "mount-source/busybox",
                                         "busybox", "\(registry)/mount-target/busybox:v1"])
        try #require(r.status == 0, "\(r.stderr)")
        #expect(try outcomes(r.stdout) == ["mounted", "mounted", "mounted"])
        // And what was mounted pulls.
        r = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/mount-target/busybox:v1", tmp.sub("rootfs")])
        #expect(r.status == 0, "pull: \(r.stderr)")
    }

    @Test func chunkedUploadOfALargeBlob() async throws {
        // A blob above the monolithic limit goes up as POST + PATCH chunks + PUT; pulled back whole.
        let tmp = TempDir("registry-chunked")
        var bytes = [UInt8](repeating: 0, count: 3 << 20 | 12345)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        try Data(bytes).write(to: URL(fileURLWithPath: tmp.sub("blob")))
        let descriptor = Descriptor(mediaType: "application/octet-stream", digest: Digest.sha256(of: bytes), size: Int64(bytes.count))
        let client = try RegistryClient(registry: registry, options: RegistryClientOptions(plainHTTP: true, monolithicUploadLimit: 1 << 20, uploadChunkSize: 1 << 20))
        do {
            let outcome = try await client.pushBlob(descriptor, fromFile: tmp.sub("blob"), to: "chunked/blob")
            #expect(outcome == .uploaded)
            let back = try await client.fetchBlobBytes(descriptor, from: "chunked/blob", limit: 8 << 20)
            #expect(back == bytes)
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }

    // MARK: Errors and faults

    @Test func missingTagNamesTheReference() throws {
        let tmp = TempDir("registry-404")
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/busybox:no-such-tag", tmp.sub("rootfs")])
        expectCleanFailure(r, dest: tmp.sub("rootfs"), mentioning: ["\(registry)/busybox:no-such-tag", "MANIFEST_UNKNOWN", "(HTTP 404)"])
        let repo = try RegistryTools.layertool(["pull", "--plain-http", "\(registry)/no/such-repo:v1", tmp.sub("rootfs")])
        expectCleanFailure(repo, dest: tmp.sub("rootfs"), mentioning: ["\(registry)/no/such-repo:v1", "(HTTP 404)"])
    }

    @Test func droppedConnectionResumesWithRangeAndVerifies() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-drop")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .dropAfter(300_000))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        let blobGets = proxy.requests.filter { $0.method == "GET" && $0.target.contains(Self.busyboxLayer1) }
        #expect(blobGets.count == 2, "\(blobGets)")
        // Resumed from the bytes that reached the client: at most the 300,000 the proxy sent
        // (AsyncHTTPClient drops what it had buffered but not delivered when the connection ends).
        let offset = blobGets.last?.range.flatMap { Int($0.dropFirst("bytes=".count).dropLast()) } ?? 0
        #expect(blobGets.last?.range?.hasPrefix("bytes=") == true && offset > 0 && offset <= 300_000, "\(String(describing: blobGets.last?.range))")
        try localUnpack(BusyboxFixture.layout, into: tmp.sub("local"))
        RegistryTools.expectSameTree(tmp.sub("local"), "layertool unpack of the layout", tmp.sub("rootfs"))
    }

    @Test func aResumeAnsweredWithTheWholeBlobSkipsWhatWasReceived() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-no-range")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .dropAfter(250_000))
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .ignoreRange)
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(proxy.requests.filter { $0.target.contains(Self.busyboxLayer1) }.count == 2)
        try localUnpack(BusyboxFixture.layout, into: tmp.sub("local"))
        RegistryTools.expectSameTree(tmp.sub("local"), "layertool unpack of the layout", tmp.sub("rootfs"))
    }

    @Test func aBlobLongerThanItsDescriptorIsRefused() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-long-blob")
        let blob = Array(try Data(contentsOf: URL(fileURLWithPath: BusyboxFixture.layout + "/blobs/sha256/" + Self.busyboxLayer1.dropFirst(7))))
        let headers = [("Content-Type", "application/octet-stream")]
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .respond(200, headers: headers, body: blob + Array(repeating: 0, count: 4096)))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        expectCleanFailure(r, dest: tmp.sub("rootfs"), mentioning: [Self.busyboxLayer1, "\(blob.count + 4096) bytes for a blob of \(blob.count)"])
    }

    @Test func connectionThatKeepsDroppingCommitsNothing() async throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-drop-always")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .dropAfter(200_000), times: 100)
        let options = RegistryClientOptions(plainHTTP: true, retry: RetryPolicy(maximumAttempts: 2, initialDelay: .milliseconds(5)), maximumResumes: 3)
        let client = try RegistryClient(registry: proxy.host, options: options)
        let reference = try ImageReference(parsing: "\(proxy.host)/busybox:latest")
        await #expect {
            _ = try await ImagePuller(client: client).pull(reference, to: tmp.sub("rootfs"))
        } throws: { error in
            let e = error as! RegistryError
            return e.kind == .transport && e.description.contains("resumes") && e.description.contains(Self.busyboxLayer1)
        }
        await client.shutdown()
        #expect(access(tmp.sub("rootfs"), F_OK) != 0)
        #expect(RegistryEnvironment.leftovers(in: tmp.path).isEmpty)
        // The first GET and three resumes, each from where the last one stopped (what reached
        // the client: AsyncHTTPClient drops what it had buffered but not delivered at the drop).
        let ranges = proxy.requests.filter { $0.method == "GET" && $0.target.contains(Self.busyboxLayer1) }.map(\.range)
        #expect(ranges.count == 4 && ranges[0] == nil, "\(ranges)")
        let offsets = ranges.dropFirst().compactMap { $0.flatMap { Int($0.dropFirst("bytes=".count).dropLast()) } }
        #expect(offsets.count == 3 && offsets == offsets.sorted() && Set(offsets).count == 3 && offsets.allSatisfy { $0 < Self.busyboxLayer1Size }, "\(ranges)")
    }

    @Test func serverErrorThenSuccessIsRetried() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-500")
        proxy.add("GET", "/manifests/latest", .status(500))
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .status(503))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(proxy.requests.filter { $0.method == "GET" && $0.target.hasSuffix("/manifests/latest") }.count == 2)
        #expect(proxy.requests.filter { $0.method == "GET" && $0.target.contains(Self.busyboxLayer1) }.count == 2)
    }

    @Test func tooManyRequestsHonoursRetryAfter() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-429")
        proxy.add("GET", "/manifests/latest", .status(429, headers: [("Retry-After", "1")]))
        let started = ContinuousClock.now
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        try #require(r.status == 0, "pull: \(r.stderr)")
        // The wait asked for was kept (the default first backoff is a quarter of that).
        #expect(ContinuousClock.now - started >= .milliseconds(950))
    }

    @Test func persistentServerErrorIsOneLine() async throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-500-always")
        let body = #"{"errors":[{"code":"UNKNOWN","message":"storage backend \u001b[31mfailed\nsecond line"}]}"#
        proxy.add("GET", "/manifests/latest", .respond(500, headers: [("Content-Type", "application/json")], body: Array(body.utf8)), times: 10)
        let client = try RegistryClient(registry: proxy.host, options: RegistryClientOptions(plainHTTP: true, retry: RetryPolicy(maximumAttempts: 3, initialDelay: .milliseconds(5))))
        let reference = try ImageReference(parsing: "\(proxy.host)/busybox:latest")
        await #expect {
            _ = try await ImagePuller(client: client).pull(reference, to: tmp.sub("rootfs"))
        } throws: { error in
            let text = (error as! RegistryError).description
            return text == "\(self.proxy.host)/busybox:latest: UNKNOWN: storage backend  [31mfailed second line (HTTP 500)"
        }
        await client.shutdown()
        #expect(proxy.requests.filter { $0.target.hasSuffix("/manifests/latest") }.count == 3)
    }

    @Test func blobThatDoesNotMatchItsDigestCommitsNothing() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-corrupt")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .corrupt(at: 500_000))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")])
        expectCleanFailure(r, dest: tmp.sub("rootfs"), mentioning: [Self.busyboxLayer1, "hashes to"])

        // Into a DEST with content: untouched.
        let dest = tmp.mkdir("existing")
        try "kept\n".write(toFile: dest + "/file", atomically: true, encoding: .utf8)
        let before = TreeSnapshot.unpacked(dest)
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .corrupt(at: 1000))
        let again = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:latest", dest])
        #expect(again.status == 1)
        #expect(TreeSnapshot.unpacked(dest) == before)
        #expect(RegistryEnvironment.leftovers(in: tmp.path).isEmpty)
    }

    @Test func manifestOver4MiBIsRefused() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-big-manifest")
        var big = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"pad":""#.utf8)
        big += [UInt8](repeating: UInt8(ascii: "x"), count: 5 << 20)
        big += Array(#""}}"#.utf8)
        proxy.add("GET", "/manifests/big", .respond(200, headers: [("Content-Type", "application/vnd.oci.image.manifest.v1+json")], body: big))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:big", tmp.sub("rootfs")])
        expectCleanFailure(r, dest: tmp.sub("rootfs"), mentioning: ["\(proxy.host)/busybox:big", "4 MiB"])
    }

    @Test func schema1ManifestIsRefused() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-schema1")
        let body = #"{"schemaVersion":1,"name":"busybox","tag":"old","architecture":"amd64","fsLayers":[],"history":[]}"#
        proxy.add("GET", "/manifests/old", .respond(200, headers: [("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")], body: Array(body.utf8)))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox:old", tmp.sub("rootfs")])
        expectCleanFailure(r, dest: tmp.sub("rootfs"), mentioning: ["\(proxy.host)/busybox:old", "schema 1"])
    }

    @Test func manifestNotMatchingTheDigestAskedForIsRefused() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-manifest-digest")
        let other = "sha256:" + String(repeating: "ab", count: 32)
        let manifest = try Data(contentsOf: URL(fileURLWithPath: BusyboxFixture.layout + "/blobs/sha256/" + BusyboxFixture.manifestDigest.dropFirst(7)))
        proxy.add("GET", "/manifests/" + other, .respond(200, headers: [("Content-Type", "application/vnd.oci.image.manifest.v1+json")], body: Array(manifest)))
        let r = try RegistryTools.layertool(["pull", "--plain-http", "\(proxy.host)/busybox@\(other)", tmp.sub("rootfs")])
        expectCleanFailure(r, dest: tmp.sub("rootfs"), mentioning: ["hashes to \(BusyboxFixture.manifestDigest)"])
    }

    @Test func ctrlCCommitsNothing() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("registry-sigint")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer1, .stallAfter(400_000))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Layertool.path)
        process.arguments = ["pull", "--plain-http", "\(proxy.host)/busybox:latest", tmp.sub("rootfs")]
        process.environment = ["PATH": "/usr/bin:/bin"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Bounded wait until the layer is half sent, then interrupt.
        for _ in 0..<800 where !proxy.stalled { usleep(25_000) }
        #expect(proxy.stalled)
        usleep(100_000)
        kill(process.processIdentifier, SIGINT)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 130, "\(stderr)")
        #expect(stderr.contains("interrupted"))
        #expect(access(tmp.sub("rootfs"), F_OK) != 0)
        #expect(RegistryEnvironment.leftovers(in: tmp.path).isEmpty, "\(RegistryEnvironment.leftovers(in: tmp.path))")
    }
}
