import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import LayerKit
import LayerKitFUSE

/// `layertool fuse-serve`: the userspace union daemon (hidden; `mount --driver fuse` starts it
/// through `DaemonFuseMounter`, with `FuseDaemon`'s protocol).
struct FuseServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuse-serve",
        abstract: "Serve a copy-up union of LOWER dirs under UPPER on TARGET over FUSE.",
        shouldDisplay: false
    )

    @Option(name: .customLong("lower"), help: "A lower dir, top first (repeat).")
    var lowers: [String] = []

    @Option(help: "The writable upper dir.")
    var upper: String

    @Option(help: "A work dir on the upper dir's file system.")
    var work: String

    @Option(name: .customLong("ready-fd"), help: "An fd to write \"ready\" (or an error line) to.")
    var readyFD: Int32?

    @Option(name: .customLong("whiteout-form"),
            help: "overlay or aufs: force how deletions are recorded in the upper (default: overlay where a 0/0 device can be made).")
    var whiteoutForm: String?

    @Flag(name: .customLong("no-writeback-cache"),
          help: "Write through to the upper on every write(), so that a full disk fails the write itself rather than a later close() or fsync().")
    var noWritebackCache = false

    @Option(help: "Worker threads serving requests (default: one per CPU, at least two).")
    var threads: UInt32?

    @Argument(help: "The mount point.")
    var target: String

    func run() throws {
        var configuration = FuseDaemon.Configuration(lowers: lowers, upper: upper, work: work, target: target)
        switch whiteoutForm {
        case nil: break
        case "aufs": configuration.whiteoutForm = .aufs
        case "overlay": configuration.whiteoutForm = .overlay(geteuid() == 0 ? .trusted : .user)
        case let other?: throw ValidationError("--whiteout-form \(other): expected overlay or aufs")
        }
        configuration.writebackCache = !noWritebackCache
        configuration.threads = threads
        configuration.readyFD = readyFD
        let status = FuseDaemon.serve(configuration)
        if status != 0 { throw ExitCode(status) }
    }
}
