import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// How a program the tests ran ended, and what it printed.
struct ProcessResult: Sendable {
    /// The exit status, or the signal number when `signaled`.
    var status: Int32
    /// Killed by a signal (`status` is then the signal number).
    var signaled: Bool
    var stdout: String
    var stderr: String
}

/// Runs a program to its end and returns its exit status, stdout and stderr. `stdin` is written to
/// its standard input, which is then closed; `environment`, when given, is its whole environment
/// (else it inherits this process's). Both outputs are drained at once, so a chatty child never
/// blocks on a full pipe.
@discardableResult
func run(_ executable: String, _ arguments: [String], stdin: Data? = nil,
         environment: [String: String]? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try? input.fileHandleForWriting.close()
    let errData = DrainedPipe(err)
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal,
                         stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData.wait(), as: UTF8.self))
}

/// Runs a bash script (after `set -euo pipefail`) with `arguments` as `$1`, `$2`, ... and returns
/// its stdout; a non-zero exit fails the test, naming the script and quoting its stderr.
func bash(_ script: String, _ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let result = try run(try requireTool("bash", sourceLocation: sourceLocation),
                         ["-c", "set -euo pipefail; " + script, "bash"] + arguments)
    try #require(result.status == 0, "bash -c '\(script)' \(arguments.joined(separator: " ")) failed: \(result.stderr)",
                 sourceLocation: sourceLocation)
    return result.stdout
}

/// A pipe read to its end on another thread.
private final class DrainedPipe: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var data = Data()

    init(_ pipe: Pipe) {
        let handle = pipe.fileHandleForReading
        DispatchQueue.global().async {
            self.data = handle.readDataToEndOfFile()
            self.done.signal()
        }
    }

    /// Everything the pipe carried (the write side closed).
    func wait() -> Data {
        done.wait()
        return data
    }
}
