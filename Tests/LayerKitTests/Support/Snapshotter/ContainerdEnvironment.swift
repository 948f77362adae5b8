import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

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
    /// Ends with a short sleep: containerd's shim may drop the last output of a process that exits
    /// right after printing it (a known race of short-lived tasks, e.g. concourse/concourse#6775),
    /// which once failed the exact comparison under heavy load. The comparison stays exact.
    static let runScript = "cat /etc/hostname; ls /etc/removed-later; test -e /etc/motd || echo motd-gone; echo written > /tmp/new; cat /tmp/new; sleep 1"
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
