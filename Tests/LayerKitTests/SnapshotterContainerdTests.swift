import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// containerd 1.6 (Debian's, with runc) on `layertool snapshotter`, as a proxy plugin: images
// imported and run with `ctr --snapshotter layertool`, removed and collected; the server killed
// mid-unpack; and an image the store already has pulled through containerd's unpacker without
// containerd applying a layer.

/// A containerd daemon and a `layertool snapshotter` under one temp dir, both stopped (and
/// every mount under the dir detached) when the object goes.
final class ContainerdEnvironment {
    let tmp = TempDir("snap-e2e")
    var store: String { tmp.sub("store") }
    var snapshotterSocket: String { tmp.sub("layertool.sock") }
    var containerdSocket: String { tmp.sub("containerd.sock") }
    var containerdLog: String { tmp.sub("containerd.log") }
    var server: SnapshotterProcess?
    private var containerd: BackgroundProcess?
    private var serverStarts = 0

    init() throws {
        try startServer()
        let config = """
            version = 2
            root = "\(tmp.sub("containerd-root"))"
            state = "\(tmp.sub("containerd-state"))"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]

            [grpc]
              address = "\(containerdSocket)"

            [ttrpc]
              address = "\(containerdSocket).ttrpc"

            [debug]
              level = "debug"

            [proxy_plugins]
              [proxy_plugins.layertool]
                type = "snapshot"
                address = "\(snapshotterSocket)"
            """
        try config.write(toFile: tmp.sub("containerd.toml"), atomically: true, encoding: .utf8)
        let daemon = try BackgroundProcess(try requireTool("containerd"), ["--config", tmp.sub("containerd.toml")], logPath: containerdLog)
        containerd = daemon
        let up = daemon.waitUntil(seconds: 60) { SnapshotterTestEnv.socketAnswers(containerdSocket) }
        try #require(up, "containerd did not start:\n\(daemon.output.suffix(8000))")
    }

    deinit {
        if let containerd, containerd.process.isRunning {
            containerd.signal(SIGTERM)
            if containerd.waitForExit(seconds: 30) == nil { containerd.signal(SIGKILL) }
        }
        server?.stop()
        Self.detachMounts(under: tmp.path)
    }

    /// (Re)starts the snapshotter, with `environment` (a crash point).
    func startServer(environment: [String: String] = [:]) throws {
        serverStarts += 1
        server = try SnapshotterProcess(root: store, socket: snapshotterSocket, logPath: tmp.sub("layertool-\(serverStarts).log"),
                                        environment: environment)
    }

    /// Waits (up to 30 s) until containerd's connection to a restarted snapshotter works again
    /// (containerd redials with a backoff of up to 3 s and fails calls meanwhile): a Prepare
    /// reaches the server (List would not: containerd answers it from its own records).
    func waitForContainerdToReconnect() throws -> Bool {
        for attempt in 0..<300 {
            let probe = "reconnect-probe-\(attempt)"
            if try ctr(["snapshots", "--snapshotter", "layertool", "prepare", probe]).status == 0 {
                return try ctr(["snapshots", "--snapshotter", "layertool", "rm", probe]).status == 0
            }
            usleep(100_000)
        }
        return false
    }

    /// `ctr` on this daemon, in namespace `e2e`.
    func ctr(_ arguments: [String]) throws -> ProcessResult {
        try run(try requireTool("ctr"), ["--address", containerdSocket, "--namespace", "e2e"] + arguments)
    }

    /// containerd's log so far.
    var daemonLog: String { containerd?.output ?? "" }

    /// The busybox fixture as an OCI archive (what `ctr images import` reads).
    func busyboxArchive() throws -> String {
        let path = tmp.sub("busybox.tar")
        let r = try run(try requireTool("tar"), ["-C", BusyboxFixture.layout, "-cf", path, "."])
        try #require(r.status == 0, "tar: \(r.stderr)")
        return path
    }

    /// Imports the fixture and returns containerd's name for it.
    func importBusybox() throws -> String {
        let imported = try ctr(["images", "import", "--snapshotter", "layertool", try busyboxArchive()])
        try #require(imported.status == 0, "ctr images import: \(imported.stderr)\n\(server?.server.output.suffix(4000) ?? "")")
        let names = try ctr(["images", "ls", "-q"]).stdout.split(separator: "\n").map(String.init)
        return try #require(names.first, "no image after import")
    }

    /// The container reads both layers (layer 2's whiteout and opaque dir honoured) and writes.
    static let runScript = "cat /etc/hostname; ls /etc/removed-later; test -e /etc/motd || echo motd-gone; echo written > /tmp/new; cat /tmp/new"
    static let runOutput = "layer2-host\nkept\nmotd-gone\nwritten\n"

    func runBusybox(_ image: String, id: String) throws -> ProcessResult {
        try ctr(["run", "--rm", "--snapshotter", "layertool", image, id, "/bin/sh", "-c", Self.runScript])
    }

    /// Waits (up to 30 s) for containerd's garbage collector (it removes the snapshots of deleted
    /// containers and images in the background) to leave `count` snapshots.
    func waitForSnapshots(count: Int = 0) throws -> Bool {
        for _ in 0..<300 {
            if try LayerStore(root: store).snapshots().count == count { return true }
            usleep(100_000)
        }
        return false
    }

    static func detachMounts(under dir: String) {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return }
        let points = table.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            return point.hasPrefix(dir + "/") ? point : nil
        }
        for point in points.sorted(by: { $0.count > $1.count }) { umount2(point, Int32(MNT_DETACH)) }
    }
}

@Suite(.serialized) struct SnapshotterContainerdTests {
    static func layers(in store: String) throws -> [StoredLayer] { try LayerStore(root: store).layers() }

    /// Import, run, list, remove: what containerd applied is in the store as layers, and after
    /// `ctr images rm --sync` (containerd's gc: Remove of each snapshot, then Cleanup) the store
    /// holds no snapshot, layer or dir.
    @Test(.requires(SnapshotterTestEnv.containerdRequirements))
    func importRunRemove() throws {
        let env = try ContainerdEnvironment()
        let image = try env.importBusybox()
        #expect(env.daemonLog.components(separatedBy: "diff applied").count - 1 == 2, "containerd applied both layers")

        let listed = try env.ctr(["snapshots", "--snapshotter", "layertool", "ls"])
        let committed = listed.stdout.split(separator: "\n").filter { $0.contains("Committed") }
        #expect(listed.status == 0 && committed.count == 2, "\(listed.stdout)\(listed.stderr)")
        let store = try LayerStore(root: env.store)
        let snapshots = try store.snapshots()
        #expect(snapshots.count == 2 && snapshots.allSatisfy { $0.kind == .committed && $0.ownsLayer })
        let layers = try store.layers()
        #expect(Set(layers.map(\.chainID)) == Set(snapshots.compactMap(\.chainID)))
        #expect(layers.contains { $0.parent == nil } && layers.contains { $0.parent != nil })
        // Each committed snapshot's name is containerd's, ending in the image's chainID.
        #expect(snapshots.contains { $0.name.hasSuffix("/sha256:0763ad56266eef7808506d5feafa461aaace603b78cd626ae0c9750809a39b5e") })

        let ran = try env.runBusybox(image, id: "e2e-run")
        #expect(ran.status == 0 && ran.stdout == ContainerdEnvironment.runOutput, "ctr run: \(ran.stdout)\(ran.stderr)\n\(env.daemonLog.suffix(4000))")
        #expect(try env.waitForSnapshots(count: 2), "the container's active snapshot is removed after ctr run --rm")

        let removed = try env.ctr(["images", "rm", "--sync", image])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(try env.waitForSnapshots(), "containerd's gc left snapshots")
        let after = try LayerStore(root: env.store)
        #expect(try after.layers().isEmpty)
        #expect(try after.verify() == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: after.paths.layersDir).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: after.paths.linksDir).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: after.paths.snapshotsDir) == ["server.lock"])
    }

    /// The server killed while containerd unpacks (it dies committing the second layer, after
    /// the records, before the move), restarted: the next import and run succeed, and gc then
    /// leaves nothing, the snapshot of the interrupted commit included.
    @Test(.requires(SnapshotterTestEnv.containerdRequirements))
    func killedMidUnpack() throws {
        let env = try ContainerdEnvironment()
        env.server?.stop()
        try env.startServer(environment: ["LAYERKIT_STORE_CRASH": "snapshot.commit.recorded:2"])
        #expect(try env.waitForContainerdToReconnect())
        let failed = try env.ctr(["images", "import", "--snapshotter", "layertool", try env.busyboxArchive()])
        #expect(failed.status != 0, "the import should fail with its snapshotter gone: \(failed.stdout)")
        let exit = env.server?.server.waitForExit(seconds: 30)
        #expect(exit?.signaled == true && exit?.status == SIGKILL, "\(env.server?.server.output.suffix(4000) ?? "")")
        if exit == nil {
            env.server?.server.signal(SIGKILL)
            _ = env.server?.server.waitForExit(seconds: 30)
        }

        try env.startServer()
        #expect(try env.waitForContainerdToReconnect())
        let image = try env.importBusybox()
        let ran = try env.runBusybox(image, id: "after-crash")
        #expect(ran.status == 0 && ran.stdout == ContainerdEnvironment.runOutput, "\(ran.stdout)\(ran.stderr)")
        #expect(try LayerStore(root: env.store).verify() == [])

        #expect(try env.ctr(["images", "rm", "--sync", image]).status == 0)
        #expect(try env.waitForSnapshots(), "containerd's gc left snapshots")
        #expect(try Self.layers(in: env.store).isEmpty)
    }

    /// The remote-snapshot fast path: with the image already in the store (`layertool unpack
    /// --image`), containerd's unpacker (client.Pull with unpack, the path CRI and nerdctl take)
    /// pulls it from a registry and applies no layer: each Prepare is answered AlreadyExists with
    /// a committed snapshot on the store's layer, found by List with containerd's label filter.
    @Test(.requires(SnapshotterTestEnv.containerdRequirements))
    func pullOfAnImageTheStoreHasAppliesNothing() throws {
        let binaries = try SnapshotterTestEnv.harnessBinaries()
        let env = try ContainerdEnvironment()
        let unpacked = try run(Layertool.path, ["unpack", "--image", BusyboxFixture.layout + ":latest",
                                                              "--name", "busybox", "--root", env.store])
        try #require(unpacked.status == 0, "layertool unpack: \(unpacked.stderr)")
        let storeImage = try #require(try LayerStore(root: env.store).image(named: "busybox"))

        let registry = try LocalRegistry(in: env.tmp)
        let reference = "127.0.0.1:\(registry.port)/layerkit/busybox:latest"
        let copied = try run(try requireTool("skopeo"), ["copy", "--dest-tls-verify=false", "oci:" + BusyboxFixture.layout + ":latest",
                                                "docker://" + reference])
        try #require(copied.status == 0, "skopeo copy: \(copied.stderr)")

        let appliedBefore = env.daemonLog.components(separatedBy: "diff applied").count
        let pulled = try run(binaries + "/snapshotter-tool", ["pull", "--containerd", env.containerdSocket, "--namespace", "e2e", reference])
        #expect(pulled.status == 0, "\(pulled.stdout)\(pulled.stderr)\n\(env.server?.server.output.suffix(4000) ?? "")")
        #expect(pulled.stdout.contains("chainID \(storeImage.topChainID!)"), "\(pulled.stdout)")
        #expect(env.daemonLog.components(separatedBy: "diff applied").count == appliedBefore, "containerd applied a layer")
        let served = env.server!.server.output.components(separatedBy: "served from the store's layer").count - 1
        #expect(served == 2, "\(env.server!.server.output)")

        let store = try LayerStore(root: env.store)
        #expect(try store.layers().count == 2, "no new layer")
        let snapshots = try store.snapshots()
        #expect(snapshots.map(\.chainID) == storeImage.chainIDs.map { Optional($0) })
        #expect(snapshots.map(\.name) == storeImage.chainIDs.map(\.description))
        #expect(snapshots.allSatisfy { $0.kind == .committed && !$0.ownsLayer })
        let listed = try env.ctr(["snapshots", "--snapshotter", "layertool", "ls"])
        #expect(listed.stdout.split(separator: "\n").filter { $0.contains("Committed") }.count == 2, "\(listed.stdout)")

        let ran = try env.runBusybox(reference, id: "fast-path")
        #expect(ran.status == 0 && ran.stdout == ContainerdEnvironment.runOutput, "\(ran.stdout)\(ran.stderr)")

        #expect(try env.ctr(["images", "rm", "--sync", reference]).status == 0)
        #expect(try env.waitForSnapshots())
        // The layers are the image's: they stay until `layertool rm busybox` and gc.
        let after = try LayerStore(root: env.store)
        #expect(try after.layers().map(\.chainID).sorted() == storeImage.chainIDs.sorted())
        #expect(try after.verify() == [])
    }
}

/// Debian's docker-registry on 127.0.0.1 and a free port, storing under `dir`.
final class LocalRegistry {
    let port: UInt16
    private let process: BackgroundProcess

    init(in dir: TempDir) throws {
        port = try Self.freePort()
        let config = """
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: \(dir.sub("registry"))
            http:
              addr: 127.0.0.1:\(port)
            """
        try config.write(toFile: dir.sub("registry.yml"), atomically: true, encoding: .utf8)
        process = try BackgroundProcess(try requireTool("docker-registry"), ["serve", dir.sub("registry.yml")], logPath: dir.sub("registry.log"))
        let port = self.port
        let up = process.waitUntil(seconds: 30) { Self.answers(port) }
        try #require(up, "docker-registry did not start: \(process.output)")
    }

    deinit {
        process.signal(SIGTERM)
        _ = process.waitForExit(seconds: 10)
    }

    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound, "cannot find a free port")
        return UInt16(bigEndian: address.sin_port)
    }

    static func answers(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
