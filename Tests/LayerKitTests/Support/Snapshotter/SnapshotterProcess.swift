import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `layertool snapshotter` on a store and socket, started and waited for.
final class SnapshotterProcess {
    let root: String
    let socket: String
    let server: BackgroundProcess

    init(root: String, socket: String, logPath: String, environment: [String: String] = [:]) throws {
        self.root = root
        self.socket = socket
        server = try BackgroundProcess(Layertool.path, ["snapshotter", "--root", root, "--address", socket],
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
