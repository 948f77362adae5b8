import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The built `layertool` binary, run as a child process.
enum Layertool {
    /// The binary under test: `$LAYERTOOL_BIN` when set, else the `layertool` beside the test
    /// runner (the test target depends on the layertool target, so `swift test` builds it first,
    /// in the same build dir and configuration).
    static let path: String = {
        if let path = ProcessInfo.processInfo.environment["LAYERTOOL_BIN"] { return path }
        let runner = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return runner.deletingLastPathComponent().appendingPathComponent("layertool").path
    }()

    /// Runs `layertool ARGS` to its end. The child gets this process's environment without the
    /// store's crash switch, plus `environment`.
    static func run(_ arguments: [String], stdin: Data? = nil, environment: [String: String] = [:]) throws -> ProcessResult {
        try LayerKitTests.run(path, arguments, stdin: stdin, environment: childEnvironment(adding: environment))
    }

    /// This process's environment without the crash switch, plus `extra`.
    static func childEnvironment(adding extra: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: crashSwitch)
        return environment.merging(extra) { _, new in new }
    }

    /// The variable that makes the store kill itself at a named point (set only where a test asks).
    static let crashSwitch = "LAYERKIT_STORE_CRASH"

    /// A started `layertool` whose output goes to files (so it never blocks on a full pipe), for
    /// tests that kill it or run two at once.
    final class Child {
        let process = Process()
        private let outPath: String
        private let errPath: String

        init(_ arguments: [String], environment extra: [String: String] = [:], scratch: String) throws {
            let id = UUID().uuidString
            outPath = scratch + "/child-\(id).out"
            errPath = scratch + "/child-\(id).err"
            process.executableURL = URL(fileURLWithPath: Layertool.path)
            process.arguments = arguments
            process.environment = Layertool.childEnvironment(adding: extra)
            process.standardOutput = try Self.createFile(outPath)
            process.standardError = try Self.createFile(errPath)
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }

        private static func createFile(_ path: String) throws -> FileHandle {
            try #require(FileManager.default.createFile(atPath: path, contents: nil), "cannot create \(path)")
            return try #require(FileHandle(forWritingAtPath: path), "cannot open \(path)")
        }

        /// Sends SIGKILL.
        func kill() { _ = Glibc.kill(process.processIdentifier, SIGKILL) }

        /// Waits for the child to end; returns what it printed (the files are removed).
        func wait() -> ProcessResult {
            process.waitUntilExit()
            let out = FileManager.default.contents(atPath: outPath) ?? Data()
            let err = FileManager.default.contents(atPath: errPath) ?? Data()
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
            return ProcessResult(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal,
                                 stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
        }
    }
}
