import Foundation
import LayerKit
import LayerKitRegistry
import Testing
#if canImport(Glibc)
import Glibc
#endif

// `layertool pull REF` into the layer store, against a real registry (Debian's docker-registry)
// over plain HTTP with the fault proxy in front: the store equals an import of the layout; layers
// the store has are never requested (the proxy's log); the pulled image pushes back with the same
// manifest digest; a corrupt blob, a drop that cannot be resumed, Ctrl-C, kill -9 and a crash at
// every commit step leave a store with nothing of the pull, and a pull again works; two pulls of
// one image at once; the per-layer progress on a terminal.
@Suite(.serialized, .requires(RegistryEnvironment.Kind.plain.requirements), .registryEnvironment(.plain))
struct RegistryStorePullTests {
    typealias Support = StreamImportSupport
    var environment: RegistryEnvironment { RegistryEnvironment.current! }
    var registry: String { environment.registry.host }
    var proxy: FaultProxy { environment.proxy! }

    static let busyboxManifest = BusyboxFixture.manifestDigest
    static let busyboxLayer1 = RegistryPlainHTTPTests.busyboxLayer1
    static let busyboxLayer2 = "sha256:6a24f99c3a20a70e4e2d937b9b11219a0df93c296ef872f4dc113e0e0e75c55a"

    /// `layertool pull --plain-http ARGS`.
    func pull(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessResult {
        try RegistryTools.layertool(["pull", "--plain-http"] + arguments, environment: environment)
    }

    func json(_ r: ProcessResult) throws -> LayertoolOutput.StorePull {
        try r.json(LayertoolOutput.StorePull.self)
    }

    /// The fixture with a third layer, pushed as `extended:latest`; returns its layout.
    func pushExtended(_ tmp: TempDir) throws -> String {
        let layout = try Support.extend(Support.busyboxLayout, with: [.dir("app"), .file("app/hello", "hello from layer 3\n")],
                                        into: tmp.sub("extended"))
        let r = try RegistryTools.run(try requireTool("skopeo"), ["copy", "--quiet", "--dest-tls-verify=false", "oci:\(layout):latest",
                                                         "docker://\(registry)/extended:latest"])
        try #require(r.status == 0, "skopeo copy: \(r.stderr)")
        return layout
    }

    /// Expects a failed pull: one line naming what failed, and a store with nothing in it.
    func expectNothingCommitted(_ r: ProcessResult, store: String, status: Int32 = 1,
                                mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(r.status == status, "exit status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.hasPrefix("layertool: "), "\(r.stderr)", sourceLocation: sourceLocation)
        for word in words { #expect(r.stderr.contains(word), "\"\(word)\" missing from: \(r.stderr)", sourceLocation: sourceLocation) }
        #expect(r.stdout.isEmpty, sourceLocation: sourceLocation)
        try Support.expectEmpty(store, sourceLocation: sourceLocation)
    }

    // MARK: Into the store

    @Test func pullIntoTheStoreEqualsAnImportOfTheLayout() throws {
        let tmp = TempDir("store-pull")
        let store = tmp.sub("store"), reference = tmp.sub("reference")
        let r = try pull(["--root", store, "--json", "--max-concurrent-downloads", "1", "\(registry)/busybox"])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(r.stderr.isEmpty, "no progress when stderr is not a terminal: \(r.stderr)")
        let summary = try json(r)
        #expect(summary.manifestDigest == Self.busyboxManifest)
        #expect(summary.name == "\(registry)/busybox:latest")
        #expect(summary.root == (try LayerStore(root: store).root))
        #expect(summary.seconds > 0)
        let layers = summary.layers
        #expect(layers.map(\.digest) == [Self.busyboxLayer1, Self.busyboxLayer2])
        #expect(layers.map(\.downloaded) == [true, true])
        #expect(layers.map(\.outcome) == ["unpacked", "unpacked"])
        #expect(layers.map(\.size) == [Int64(RegistryPlainHTTPTests.busyboxLayer1Size), 300])

        let imported = try RegistryTools.layertool(["unpack", "--image", Support.busyboxLayout + ":latest", "--name", "busybox", "--root", reference])
        try #require(imported.status == 0, "\(imported.stderr)")
        let pulled = try LayerStore(root: store), local = try LayerStore(root: reference)
        let image = try #require(try pulled.image(named: "\(registry)/busybox:latest"))
        let localImage = try #require(try local.image(named: "busybox"))
        #expect(image.chainIDs == localImage.chainIDs && image.manifestDigest == localImage.manifestDigest)
        #expect(summary.chainID == localImage.topChainID?.description)
        // `layertool ls` of each store: the pulled image has the chainID `unpack --image` gave.
        func listed(_ root: String, _ name: String) throws -> LayertoolOutput.Image? {
            let r = try RegistryTools.layertool(["ls", "images", "--root", root, "--json"])
            try #require(r.status == 0, "ls: \(r.stderr)")
            return try r.json([LayertoolOutput.Image].self).first { $0.name == name }
        }
        let pulledRow = try #require(try listed(store, "\(registry)/busybox:latest"))
        let importedRow = try #require(try listed(reference, "busybox"))
        #expect(pulledRow.chainID != nil && pulledRow.chainID == importedRow.chainID)
        #expect(pulledRow.manifestDigest == Self.busyboxManifest)
        for chainID in image.chainIDs {
            let diffs = TreeSnapshot(local.paths.diffDir(chainID)).differences(from: TreeSnapshot(pulled.paths.diffDir(chainID)))
            #expect(diffs.isEmpty, "\(diffs)")
        }
        // The manifest, config and layer blobs, byte for byte as in the registry (= the layout).
        #expect(Support.names(pulled.paths.blobsDir) == Support.names(Support.busyboxLayout + "/blobs/sha256"))
        for name in Support.names(pulled.paths.blobsDir) {
            #expect(FileManager.default.contentsEqual(atPath: pulled.paths.blobsDir + "/" + name, andPath: Support.busyboxLayout + "/blobs/sha256/" + name))
        }
        #expect(try pulled.verify() == [])

        // Again under another name: nothing is downloaded.
        proxy.reset()
        let again = try pull(["--root", store, "--name", "bb", "--json", "\(proxy.host)/busybox:latest"])
        try #require(again.status == 0, "\(again.stderr)")
        #expect(try json(again).layers.map(\.downloaded) == [false, false])
        #expect(proxy.requests.filter { $0.target.contains("/blobs/sha256:b4b4") || $0.target.contains("/blobs/sha256:6a24") }.isEmpty)
        #expect(try LayerStore(root: store).image(named: "bb")?.chainIDs == image.chainIDs)
    }

    @Test func onlyTheLayerTheStoreLacksIsDownloaded() throws {
        let tmp = TempDir("store-pull-missing")
        let extended = try pushExtended(tmp)
        let extendedImage = try OCIImageLayout(path: extended).resolve("latest")
        let store = tmp.sub("store")
        // A first pull of the base image, then one of the image built on it.
        let base = try pull(["--root", store, "--name", "busybox", "\(registry)/busybox:latest"])
        try #require(base.status == 0, "\(base.stderr)")

        proxy.reset()
        let r = try pull(["--root", store, "--name", "extended", "--json", "\(proxy.host)/extended:latest"])
        try #require(r.status == 0, "pull: \(r.stderr)")
        let layers = try json(r).layers
        #expect(layers.map(\.downloaded) == [false, false, true])
        #expect(layers.map(\.outcome) == ["present", "present", "unpacked"])
        // The registry was asked for the manifest, the config and the third layer, nothing else.
        let blobGets = proxy.requests.filter { $0.method == "GET" && $0.target.contains("/blobs/") }.map { String($0.target.split(separator: "/").last!) }
        #expect(blobGets.sorted() == [extendedImage.manifest.config.digest.description, extendedImage.layers[2].descriptor.digest.description].sorted(),
                "\(blobGets)")
        let pulled = try LayerStore(root: store)
        #expect(try pulled.image(named: "extended")?.chainIDs == extendedImage.chainIDs)
        #expect(try String(contentsOfFile: pulled.paths.diffDir(extendedImage.chainIDs[2]) + "/app/hello", encoding: .utf8) == "hello from layer 3\n")
        #expect(try pulled.verify() == [])
    }

    @Test func aPulledImagePushesBackWithTheSameManifestDigest() throws {
        let tmp = TempDir("store-pull-push")
        let store = tmp.sub("store")
        let r = try pull(["--root", store, "--name", "pulled", "\(registry)/busybox:latest"])
        try #require(r.status == 0, "pull: \(r.stderr)")
        #expect(r.stdout.contains("manifest  \(Self.busyboxManifest)"), "\(r.stdout)")
        let pushed = try RegistryTools.layertool(["push", "--root", store, "--plain-http", "pulled", "\(registry)/elsewhere/busybox:copy"])
        try #require(pushed.status == 0, "push: \(pushed.stderr)")
        #expect(pushed.stdout == Self.busyboxManifest + "\n")
        // And what went up pulls (into another store) to the same image.
        let again = try pull(["--root", tmp.sub("second"), "--json", "\(registry)/elsewhere/busybox:copy"])
        try #require(again.status == 0, "\(again.stderr)")
        #expect(try json(again).manifestDigest == Self.busyboxManifest)
    }

    @Test func twoPullsOfOneImageAtOnceShareTheLayers() throws {
        let tmp = TempDir("store-pull-twice")
        let store = tmp.sub("store")
        // The store exists before the two start (both would otherwise create it).
        _ = try LayerStore(root: store)
        let results = try ["one", "two"].map { name -> Process in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Layertool.path)
            process.arguments = ["pull", "--plain-http", "--root", store, "--name", name, "--json", "\(registry)/busybox:latest"]
            process.environment = ["PATH": "/usr/bin:/bin"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        for process in results { process.waitUntilExit() }
        #expect(results.map(\.terminationStatus) == [0, 0])
        let pulled = try LayerStore(root: store)
        #expect(try pulled.layers().count == 2)
        #expect(try pulled.image(named: "one")?.chainIDs == pulled.image(named: "two")?.chainIDs)
        #expect(try pulled.verify() == [])
    }

    /// On a terminal (a pty from `script`), one line per layer with its blob, bytes and state.
    @Test(.requires(.tools("script")))
    func progressOnATerminalIsOneLinePerLayer() throws {
        let tmp = TempDir("store-pull-tty")
        // stderr is the pty (what script copies to its stdout); layertool's stdout is not.
        let command = "\(Layertool.path) pull --plain-http --root \(tmp.sub("store")) \(registry)/busybox:latest >/dev/null"
        let r = try RegistryTools.run(try requireTool("script"), ["-qec", command, "/dev/null"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let drawn = r.stdout
        #expect(drawn.contains("layer 1/2  sha256:b4b440e5186b") && drawn.contains("layer 2/2  sha256:6a24f99c3a20"), "\(drawn.debugDescription)")
        #expect(drawn.contains("1007 KiB /  1007 KiB") && drawn.contains("applied"), "\(drawn.debugDescription)")
    }

    /// The pulled image mounts (kernel overlayfs, in a private mount namespace) as the tree a
    /// plain `unpack` of the same image gives.
    @Test(.requires(.root(because: "mounting needs root"), .kernelOverlay, .tools("unshare")))
    func aPulledImageMounts() throws {
        let tmp = TempDir("store-pull-mount")
        let store = tmp.sub("store"), seen = tmp.mkdir("seen"), flat = tmp.sub("flat")
        let r = try pull(["--root", store, "--name", "pulled", "\(registry)/busybox:latest"])
        try #require(r.status == 0, "pull: \(r.stderr)")
        let script = """
            set -e
            "$1" mount --root "$2" --name c pulled >/dev/null
            cp -a "$2/containers/c/merged/." "$3/"
            "$1" umount --root "$2" c >/dev/null
            "$1" rm --root "$2" c >/dev/null
            """
        let mounted = try RegistryTools.run(try requireTool("unshare"), ["-m", "--propagation", "private", "/bin/sh", "-c", script, "sh",
                                                               Layertool.path, store, seen])
        try #require(mounted.status == 0, "mount: \(mounted.stdout)\(mounted.stderr)")
        let unpacked = try RegistryTools.layertool(["unpack", "--image", Support.busyboxLayout + ":latest", flat])
        try #require(unpacked.status == 0, "\(unpacked.stderr)")
        // Dir mtimes aside (cp -a sets a dir's after filling it, from the merged view).
        var options = TreeSnapshot.Options()
        options.dirMtimes = false
        let diffs = TreeSnapshot(flat, options: options).differences(from: TreeSnapshot(seen, options: options))
        #expect(diffs.isEmpty, "\(diffs)")
        #expect(try LayerStore(root: store).containers().isEmpty)
    }

    // MARK: Nothing committed

    @Test func aBlobThatDoesNotMatchCommitsNothing() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("store-pull-corrupt")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer2, .corrupt(at: 150))
        let r = try pull(["--root", tmp.sub("store"), "\(proxy.host)/busybox:latest"])
        // Layer 1 was complete and verified before layer 2 failed: it is not kept either.
        try expectNothingCommitted(r, store: tmp.sub("store"), mentioning: [Self.busyboxLayer2, "hashes to"])
    }

    @Test func aDropThatCannotBeResumedCommitsNothing() async throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("store-pull-drop")
        // Layer 2 (300 bytes) arrives 50 bytes a connection: after two resumes it is still short.
        proxy.add("GET", "/blobs/" + Self.busyboxLayer2, .dropAfter(50), times: 100)
        let options = RegistryClientOptions(plainHTTP: true, retry: RetryPolicy(maximumAttempts: 2, initialDelay: .milliseconds(5)), maximumResumes: 2)
        let client = try RegistryClient(registry: proxy.host, options: options)
        let store = try LayerStore(root: tmp.sub("store"))
        await #expect {
            _ = try await ImagePuller(client: client).pull(try ImageReference(parsing: "\(proxy.host)/busybox:latest"), into: store)
        } throws: { error in
            let e = error as! RegistryError
            return e.kind == .transport && e.description.contains("resumes") && e.description.contains(Self.busyboxLayer2)
        }
        await client.shutdown()
        try Support.expectEmpty(store.root)
    }

    @Test func ctrlCCommitsNothing() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("store-pull-sigint")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer2, .stallAfter(100))
        let (status, stderr) = try interrupt(["pull", "--plain-http", "--root", tmp.sub("store"), "\(proxy.host)/busybox:latest"],
                                             with: SIGINT, store: tmp.sub("store"))
        #expect(status == 130, "\(stderr)")
        #expect(stderr.contains("interrupted") && stderr.split(separator: "\n").count == 1, "\(stderr)")
        try Support.expectEmpty(tmp.sub("store"))
    }

    /// kill -9 while layer 2 downloads and layer 1 sits unpacked in staging: `layertool ls`
    /// (the next open) shows a clean store, and the pull again works.
    @Test func killNineMidPullLeavesNothingTheNextOpenDoesNotClean() throws {
        proxy.reset()
        defer { proxy.reset() }
        let tmp = TempDir("store-pull-kill")
        let store = tmp.sub("store")
        proxy.add("GET", "/blobs/" + Self.busyboxLayer2, .stallAfter(100))
        let (status, _) = try interrupt(["pull", "--plain-http", "--root", store, "\(proxy.host)/busybox:latest"], with: SIGKILL, store: store)
        #expect(status == SIGKILL)
        let staging = Support.names(store + "/staging")
        #expect(staging.count == 1, "the killed pull's staging dir: \(staging)")
        try expectCleanAfterCrashAndPullAgain(store)
    }

    /// A crash at each step of the commit (the process kills itself there, as a power cut would):
    /// before the commit point the next open removes everything; after it the image is whole.
    @Test(arguments: ["stream-import.unpacked", "stream-import.synced", "stream-import.blobs", "stream-import.renamed",
                      "stream-import.linked", "stream-import.recorded"])
    func aCrashAtEachCommitStep(point: String) throws {
        let tmp = TempDir("store-pull-crash")
        let store = tmp.sub("store")
        let r = try pull(["--root", store, "\(registry)/busybox:latest"], environment: ["LAYERKIT_STORE_CRASH": point])
        #expect(r.status == SIGKILL, "\(point): \(r.stderr)")
        if point == "stream-import.recorded" {
            let listed = try RegistryTools.layertool(["ls", "--root", store, "--json"])
            #expect(listed.status == 0 && listed.stdout.contains("\(registry)/busybox:latest"), "\(listed.stdout)\(listed.stderr)")
            let opened = try LayerStore(root: store)
            #expect(Support.names(opened.paths.stagingDir).isEmpty)
            #expect(Support.names(opened.paths.blobsDir) == Support.names(Support.busyboxLayout + "/blobs/sha256"))
            #expect(try opened.verify() == [])
        } else {
            try expectCleanAfterCrashAndPullAgain(store)
        }
    }

    /// `layertool ls` shows no image and no layer; the store holds no blob, layer dir, link or
    /// staging dir; a pull again gives the whole image.
    func expectCleanAfterCrashAndPullAgain(_ store: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for what in ["images", "layers"] {
            let listed = try RegistryTools.layertool(["ls", what, "--root", store, "--json"])
            #expect(listed.status == 0, "\(listed.stderr)", sourceLocation: sourceLocation)
            let count = what == "images" ? try listed.json([LayertoolOutput.Image].self).count : try listed.json([LayertoolOutput.StoreLayer].self).count
            #expect(count == 0, "ls \(what): \(listed.stdout)", sourceLocation: sourceLocation)
        }
        try Support.expectEmpty(store, sourceLocation: sourceLocation)
        let again = try pull(["--root", store, "\(registry)/busybox:latest"])
        #expect(again.status == 0, "\(again.stderr)", sourceLocation: sourceLocation)
        let pulled = try LayerStore(root: store)
        #expect(try pulled.image(named: "\(registry)/busybox:latest")?.chainIDs.count == 2, sourceLocation: sourceLocation)
        #expect(try pulled.verify() == [], sourceLocation: sourceLocation)
    }

    /// Runs layertool until the proxy holds layer 2 back (a stall rule) and layer 1 is unpacked
    /// in the store's staging dir, then sends `signalNumber`; the exit status (or the signal) and stderr.
    func interrupt(_ arguments: [String], with signalNumber: Int32, store: String) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Layertool.path)
        process.arguments = arguments
        process.environment = ["PATH": "/usr/bin:/bin"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Bounded waits: the stall, then layer 1's staged dir (its link file is written only at
        // the commit, so a diff dir with files is the sign).
        func layerOneStaged() -> Bool {
            Support.names(store + "/staging").contains { session in
                !Support.names(store + "/staging/" + session + "/layer-0/diff").isEmpty
                    && Support.names(store + "/staging/" + session + "/layer-0/diff").contains("bin")
            }
        }
        for _ in 0..<1200 where !(proxy.stalled && layerOneStaged()) { usleep(25_000) }
        #expect(proxy.stalled && layerOneStaged(), "the pull did not reach the stall with layer 1 staged")
        usleep(200_000)
        kill(process.processIdentifier, signalNumber)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, stderr)
    }
}
