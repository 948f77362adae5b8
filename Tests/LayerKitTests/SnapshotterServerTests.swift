import Foundation
import LayerKit
import LayerKitSnapshotter
import Testing
#if canImport(Glibc)
import Glibc
#endif

// `layertool snapshotter` (issue 12): containerd's snapshots service on the layer store.
// The server is always the real binary on a real unix socket; its clients are containerd's own
// Go code (the conformance suite and snapshots/proxy, built from Debian's containerd 1.6 sources)
// and, end to end, containerd 1.6 itself with runc.

@Suite(.serialized) struct SnapshotterServerTests {
    /// containerd's snapshotter conformance suite, every case, through snapshots/proxy.
    @Test(.requires(SnapshotterTestEnv.harnessRequirements))
    func containerdConformanceSuite() throws {
        let binaries = try SnapshotterTestEnv.harnessBinaries()
        let tmp = TempDir("snapshot-suite")
        var environment = ProcessInfo.processInfo.environment
        environment["LAYERTOOL"] = Layertool.path
        environment["TMPDIR"] = tmp.path
        let result = try run(binaries + "/conformance.test", ["-test.v", "-test.timeout", "20m"],
                                                               environment: environment)
        let lines = result.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let passed = lines.filter { $0.hasPrefix("--- PASS: TestLayertoolSnapshotter/") }
        let failed = lines.filter { $0.hasPrefix("--- FAIL") }
        let skipped = lines.filter { $0.hasPrefix("--- SKIP") }
        #expect(result.status == 0 && failed.isEmpty, "conformance suite failed:\n\(failed.joined(separator: "\n"))\n\(result.stdout.suffix(20_000))\n\(result.stderr.suffix(4000))")
        // 21 cases; containerd's suite itself skips Rename ("still fails on some kernels with overlay").
        #expect(passed.count == 20, "passed: \(passed)")
        #expect(skipped.map { $0.hasPrefix("--- SKIP: TestLayertoolSnapshotter/Rename") } == [true], "skipped: \(skipped)")
    }

    /// Several clients at once, each on its own connection: prepares on a shared base, races for
    /// the same key (one wins, the others get AlreadyExists), commits, removes; then the store
    /// checks out clean.
    @Test(.requires(SnapshotterTestEnv.harnessRequirements))
    func concurrentClients() throws {
        let binaries = try SnapshotterTestEnv.harnessBinaries()
        let tmp = TempDir("snapshot-stress")
        let server = try SnapshotterProcess(root: tmp.sub("store"), socket: tmp.sub("s.sock"), logPath: tmp.sub("server.log"))
        let result = try run(binaries + "/snapshotter-tool", ["stress", "--address", server.socket, "--clients", "6", "--rounds", "8"])
        #expect(result.status == 0, "\(result.stderr)\n\(server.server.output.suffix(8000))")
        #expect(result.stdout.contains("6 clients x 8 rounds: 25 committed, 8 active left, consistent"), "\(result.stdout)")
        #expect(server.stop() == 0)
        #expect(access(server.socket, F_OK) != 0, "the socket is removed on SIGTERM")
        let store = try LayerStore(root: server.root)
        #expect(try store.verify() == [])
        #expect(try store.snapshots().count == 33)
    }

    /// SIGTERM while clients are busy: the server stops taking calls, lets those in flight end,
    /// exits 0 and removes its socket; the store is consistent and opens clean.
    @Test(.requires(SnapshotterTestEnv.harnessRequirements))
    func sigtermUnderLoad() throws {
        let binaries = try SnapshotterTestEnv.harnessBinaries()
        let tmp = TempDir("snapshot-sigterm")
        let server = try SnapshotterProcess(root: tmp.sub("store"), socket: tmp.sub("s.sock"), logPath: tmp.sub("server.log"))
        let clients = try BackgroundProcess(binaries + "/snapshotter-tool", ["stress", "--address", server.socket, "--clients", "4", "--rounds", "200"],
                                            logPath: tmp.sub("clients.log"))
        let busy = server.server.waitUntil(seconds: 60) { server.server.output.components(separatedBy: "committed ").count > 20 }
        #expect(busy, "the clients did not get going: \(clients.output)")
        server.server.signal(SIGTERM)
        #expect(server.server.waitForExit(seconds: 60)?.status == 0, "\(server.server.output.suffix(4000))")
        #expect(access(server.socket, F_OK) != 0)
        let clientsExit = clients.waitForExit(seconds: 60)
        #expect(clientsExit != nil && clientsExit?.status != 0, "the clients lost their server: \(clients.output)")
        let store = try LayerStore(root: server.root)
        #expect(try store.verify() == [])
        #expect(store.openingCleanup.snapshotRepairs.isEmpty, "a clean stop leaves nothing to repair")
    }

    static let crashPoints = ["snapshot.created-dirs:1", "snapshot.created-dirs:3", "snapshot.commit.layer-dir:1",
                              "snapshot.commit.recorded:1", "snapshot.commit.recorded:2", "snapshot.removed-record:1",
                              "snapshot.removed-record:2", "snapshot.removed-record:3"]

    /// `kill -9` of the server at each point of its changes (the process kills itself there):
    /// the store opens clean, the client's next calls get consistent answers, and the same
    /// sequence re-run to its end leaves exactly what a run without the crash leaves.
    @Test(.requires(SnapshotterTestEnv.harnessRequirements),
          arguments: crashPoints)
    func killedAnywhereRecovers(point: String) throws {
        let binaries = try SnapshotterTestEnv.harnessBinaries()
        let tmp = TempDir("snapshot-crash")
        let root = tmp.sub("store"), socket = tmp.sub("s.sock")
        do {
            let doomed = try SnapshotterProcess(root: root, socket: socket, logPath: tmp.sub("crash.log"),
                                                environment: ["LAYERKIT_STORE_CRASH": point])
            let first = try run(binaries + "/snapshotter-tool", ["sequence", "--address", socket])
            #expect(first.status == 3, "the sequence should lose its server at \(point): \(first.stdout)\(first.stderr)")
            let exit = doomed.server.waitForExit(seconds: 30)
            #expect(exit?.signaled == true && exit?.status == SIGKILL, "server at \(point): \(String(describing: exit))")
            #expect(access(socket, F_OK) == 0, "a killed server leaves its socket")
        }
        // Another process using the store (an import, say) holds its lock shared: opening the
        // store then cleans up nothing, and the server must put its snapshots right itself.
        let storeLock = open(root + "/locks/store.lock", O_RDWR | O_CLOEXEC)
        try #require(storeLock >= 0 && flock(storeLock, LOCK_SH) == 0)
        defer { close(storeLock) }
        let server = try SnapshotterProcess(root: root, socket: socket, logPath: tmp.sub("restart.log"))
        let second = try run(binaries + "/snapshotter-tool", ["sequence", "--address", socket])
        #expect(second.status == 0, "after the crash at \(point): \(second.stdout)\(second.stderr)\n\(server.server.output)")
        #expect(second.stdout.contains("sequence complete"))
        #expect(server.stop() == 0)
        flock(storeLock, LOCK_UN)
        let store = try LayerStore(root: root)
        #expect(try store.verify() == [])
        let snapshots = try store.snapshots()
        #expect(snapshots.map(\.name) == ["c1"])
        // Only c1's layer, and no dir no record names.
        #expect(try store.layers().map(\.chainID) == snapshots.compactMap(\.chainID))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.paths.snapshotsDir).filter { $0 != "server.lock" }
                    == snapshots.map { String($0.id) })
    }

    /// A socket a live server answers on is refused; a second server on the same store is
    /// refused; a stale socket (its server killed) is replaced; SIGINT stops cleanly too.
    @Test(.requires(.root(because: "the store's overlay markers")))
    func socketsAndStoresAreClaimedOnce() throws {
        let tmp = TempDir("snapshot-socket")
        let first = try SnapshotterProcess(root: tmp.sub("store"), socket: tmp.sub("s.sock"), logPath: tmp.sub("first.log"))
        let sameSocket = try run(Layertool.path, ["snapshotter", "--root", tmp.sub("other"), "--address", first.socket])
        #expect(sameSocket.status == 1 && sameSocket.stderr.contains("another server is listening on this socket"), "\(sameSocket.stderr)")
        let sameStore = try run(Layertool.path, ["snapshotter", "--root", first.root, "--address", tmp.sub("t.sock")])
        #expect(sameStore.status == 1 && sameStore.stderr.contains("another layertool snapshotter serves this store"), "\(sameStore.stderr)")
        #expect(access(tmp.sub("t.sock"), F_OK) != 0)
        _ = FileManager.default.createFile(atPath: tmp.sub("file"), contents: Data("not a socket".utf8))
        let notSocket = try run(Layertool.path, ["snapshotter", "--root", tmp.sub("other"), "--address", tmp.sub("file")])
        #expect(notSocket.status == 1 && notSocket.stderr.contains("is not a socket"), "\(notSocket.stderr)")
        #expect(FileManager.default.contents(atPath: tmp.sub("file")) == Data("not a socket".utf8))

        first.server.signal(SIGKILL)
        _ = first.server.waitForExit(seconds: 30)
        #expect(access(first.socket, F_OK) == 0 && !SnapshotterTestEnv.socketAnswers(first.socket))
        let second = try SnapshotterProcess(root: first.root, socket: first.socket, logPath: tmp.sub("second.log"))
        second.server.signal(SIGINT)
        #expect(second.server.waitForExit(seconds: 60)?.status == 0)
        #expect(access(second.socket, F_OK) != 0)
        #expect(second.server.output.contains("stopped; \(second.socket) removed"))
    }
}
