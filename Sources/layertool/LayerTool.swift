import ArgumentParser
import Foundation

@main
struct LayerTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layertool",
        abstract: "Unpack, verify and inspect OCI and Docker image layers.",
        discussion: """
            Layers may be plain tar, gzip or zstd: the format is read from the data, never from the
            file name. Every layer's blob digest and diffID are computed while it is unpacked.

            Every error is one line on stderr, `layertool: ...`: exit status 1 when the command
            failed, 2 when it was called wrongly.
            """,
        subcommands: [Unpack.self, Diff.self, Inspect.self, Mount.self, Umount.self, Commit.self, Export.self, Ls.self, Rm.self, Gc.self, FuseServe.self, Pull.self, Push.self, Snapshotter.self]
    )

    /// Runs the command, keeping the error contract: a usage error is one line (not a usage dump)
    /// with status 2; a failure has been printed by the command, status 1.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let exit as ExitCode {
            Foundation.exit(exit.rawValue)
        } catch {
            // --help and --version are "errors" that print what was asked for, with status 0.
            if exitCode(for: error) == .success { self.exit(withError: error) }
            let message = self.message(for: error)
                .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                .joined(separator: "; ")
            FileHandle.standardError.write(Data("layertool: \(message) (see layertool --help)\n".utf8))
            Foundation.exit(2)
        }
    }
}
