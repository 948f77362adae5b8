import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What the snapshotter tests need: the layertool binary, the Go harness (containerd's
/// conformance suite and a containerd client, built once per test run from Debian's containerd
/// Go sources), and servers started in the background and always stopped.
enum SnapshotterTestEnv {
    static let layertool = ProcessInfo.processInfo.environment["LAYERTOOL_BIN"] ?? repositoryRoot + "/.build/debug/layertool"
    static let harnessDir = repositoryRoot + "/Tests/containerd-conformance"
    static let busyboxLayout = fixturesDir + "/busybox"

    /// Root (mounts, overlayfs, containerd), Go and Debian's containerd Go sources.
    static var canBuildHarness: Bool {
        geteuid() == 0 && which("go") != nil
            && access("/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go", R_OK) == 0
            && access("/usr/share/gocode/src/gotest.tools/assert", R_OK) == 0
    }

    /// Also containerd, ctr, runc, skopeo and docker-registry for the end-to-end tests.
    static var canRunContainerd: Bool {
        canBuildHarness && ["containerd", "ctr", "runc", "containerd-shim-runc-v2", "skopeo", "docker-registry", "tar"].allSatisfy { which($0) != nil }
    }

    private static let harnessLock = NSLock()
    nonisolated(unsafe) private static var harness: Result<String, HarnessError>?

    struct HarnessError: Error, CustomStringConvertible {
        let description: String
    }

    /// The dir holding `conformance.test` and `snapshotter-tool`, built on first use of a test run
    /// (about a minute; Go's build cache under .build/go-cache makes later runs quick).
    static func harnessBinaries() throws -> String {
        try harnessLock.withLock {
            if harness == nil {
                // Under .build (ignored by git), rebuilt once per test run: nothing left in /tmp.
                let out = repositoryRoot + "/.build/snapshotter-harness"
                var environment = ProcessInfo.processInfo.environment
                environment["OUT"] = out
                environment["GOCACHE"] = environment["GOCACHE"] ?? repositoryRoot + "/.build/go-cache"
                let result = try runWithEnvironment(harnessDir + "/build.sh", [], environment: environment)
                harness = result.status == 0 ? .success(out)
                    : .failure(HarnessError(description: "building the Go harness failed:\n\(result.stderr)\(result.stdout)"))
            }
            return try harness!.get()
        }
    }

    /// Runs a program with an environment; stdout and stderr captured.
    static func runWithEnvironment(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let logs = TempDir("snapshotter-run")
        _ = FileManager.default.createFile(atPath: logs.sub("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.sub("err"), contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: logs.sub("out")))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: logs.sub("err")))
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try out.close()
        try err.close()
        return (process.terminationStatus,
                (try? String(contentsOfFile: logs.sub("out"), encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: logs.sub("err"), encoding: .utf8)) ?? "")
    }

    /// Whether something accepts connections on the unix socket `path`.
    static func socketAnswers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }
}

/// A program running in the background with its output in a log file; killed (SIGKILL) when
/// the object goes if it is still running.
final class BackgroundProcess {
    let process = Process()
    let logPath: String
    private let log: FileHandle

    init(_ executable: String, _ arguments: [String], logPath: String, environment: [String: String] = [:]) throws {
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? log.close()
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits up to `seconds` for the process to exit; its termination status, or nil.
    func waitForExit(seconds: Double) -> (status: Int32, signaled: Bool)? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        guard !process.isRunning else { return nil }
        return (process.terminationStatus, process.terminationReason == .uncaughtSignal)
    }

    /// Waits up to `seconds` for `ready`; false if the process exited or time ran out.
    func waitUntil(seconds: Double, _ ready: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if ready() { return true }
            if !process.isRunning { return false }
            usleep(20_000)
        }
        return ready()
    }
}

/// `layertool snapshotter` on a store and socket, started and waited for.
final class SnapshotterProcess {
    let root: String
    let socket: String
    let server: BackgroundProcess

    init(root: String, socket: String, logPath: String, environment: [String: String] = [:]) throws {
        self.root = root
        self.socket = socket
        server = try BackgroundProcess(SnapshotterTestEnv.layertool, ["snapshotter", "--root", root, "--address", socket],
                                       logPath: logPath, environment: environment)
        let up = server.waitUntil(seconds: 60) { server.output.contains("serving ") && SnapshotterTestEnv.socketAnswers(socket) }
        try #require(up, "layertool snapshotter did not start serving on \(socket):\n\(server.output)")
    }

    /// SIGTERM, then the exit status (nil: still running after 60 s).
    @discardableResult
    func stop() -> Int32? {
        guard server.process.isRunning else { return server.process.terminationStatus }
        server.signal(SIGTERM)
        return server.waitForExit(seconds: 60)?.status
    }
}
