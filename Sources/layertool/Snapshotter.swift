import ArgumentParser
import Dispatch
import Foundation
import LayerKit
import LayerKitSnapshotter

struct Snapshotter: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the store to containerd as a snapshotter (a proxy plugin, over gRPC).",
        discussion: """
            Serves containerd's snapshots service on a unix socket, in the foreground, logging to
            standard error, until SIGTERM or SIGINT (calls in flight finish; the socket is removed).
            Point containerd at it in its config:

              [proxy_plugins.layertool]
                type = "snapshot"
                address = "SOCKET"

            then use `ctr --snapshotter layertool ...` (or the CRI plugin's snapshotter setting).
            Committed snapshots are layers of the store, beside layertool's images; an unpack of a
            layer the store already has (layertool unpack --image) is answered from the store.
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(help: ArgumentHelp("The unix socket to listen on (its directory is created; a stale socket is replaced).", valueName: "SOCKET"))
    var address: String

    @Flag(help: "Also log the read-only calls (Stat, Mounts, List, Usage).")
    var verbose = false

    func run() throws {
        let server = SnapshotterServer(root: store.resolvedRoot, socketPath: address, log: SnapshotterLog(verbose: verbose),
                                       configuration: ToolEnvironment.storeConfiguration())
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        Task {
            do throws(SnapshotterServer.Failure) { try await server.run() } catch { outcome.set(error.description) }
            done.signal()
        }
        done.wait()
        if let message = outcome.get() { throw fail(LayerError(.input, message)) }
    }
}

/// The server's failure, handed from its task to the waiting command.
private final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var message: String?
    func set(_ text: String) { lock.withLock { message = text } }
    func get() -> String? { lock.withLock { message } }
}
