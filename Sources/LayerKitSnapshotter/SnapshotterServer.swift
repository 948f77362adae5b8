import Dispatch
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// `layertool snapshotter`: containerd's snapshots service on a layer store, over gRPC on a unix
/// socket, until SIGTERM or SIGINT.
///
/// Starting: the store is opened (created, migrated, cleaned up after a crash), claimed for this
/// server (a second server on the same store is refused), and the socket is checked: one a live
/// server answers on is refused, a stale one (nothing listens) is replaced, anything else at that
/// path is left alone and refused. "serving" is logged once the socket listens.
///
/// Stopping: the first signal stops accepting calls and lets the calls in flight finish (a
/// store call always runs to its end); the socket file is then removed. A second signal stops at
/// once (the store stays consistent: each change is crash-safe).
public struct SnapshotterServer: Sendable {
    public let root: String
    public let socketPath: String
    public let log: SnapshotterLog
    /// How the store is opened (mount options, a crash point for tests, ...).
    public let configuration: LayerStore.Configuration

    public init(root: String, socketPath: String, log: SnapshotterLog = SnapshotterLog(),
                configuration: LayerStore.Configuration = LayerStore.Configuration()) {
        self.root = root
        self.socketPath = socketPath
        self.log = log
        self.configuration = configuration
    }

    /// Why the server could not start or stopped.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Serves until SIGTERM or SIGINT; returns after a clean shutdown.
    public func run() async throws(Failure) {
        for character in [",", ":"] where root.contains(character) {
            // containerd joins mount options with ',' and overlayfs splits lowerdir on ':'.
            throw Failure(description: "store root \(root.debugDescription): a path with \"\(character)\" cannot appear in mount options")
        }
        let store: LayerStore
        do throws(StoreError) { store = try LayerStore(root: root, configuration: configuration) } catch {
            throw Failure(description: error.description)
        }
        let claim: SnapshotServiceClaim
        do throws(SnapshotError) { claim = try store.claimSnapshotService() } catch {
            throw Failure(description: error.reason)
        }
        let cleanup = store.openingCleanup
        if !cleanup.isEmpty {
            log.info("cleaned up after a crash: \(cleanup.snapshotRepairs.count + cleanup.orphanContainers.count + cleanup.stagingDirs.count + cleanup.unrecordedLayers.count + cleanup.danglingLinks.count) leftovers")
        }
        // Opening cleans up only when no other process uses the store; the snapshots' part is
        // this server's alone, so it is done now in any case.
        do throws(SnapshotError) {
            for path in try store.cleanUpSnapshots() { log.info("recovered \(path)") }
        } catch {
            throw Failure(description: error.reason)
        }
        let socket: UnixSocketPath
        do throws(UnixSocketPath.Failure) { socket = try UnixSocketPath.claim(socketPath) } catch {
            throw Failure(description: error.description)
        }

        let worker = SnapshotStoreWorker(store: store)
        let service = SnapshotsService(worker: worker, log: log)
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: socket.path), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [service])
        let signals = SignalWatcher(signals: [SIGTERM, SIGINT])
        let log = self.log
        let storeRoot = store.root
        defer { withExtendedLifetime(claim) {} }

        let outcome: Result<Void, any Error> = await withTaskGroup(of: Result<Void, any Error>?.self) { group in
            group.addTask {
                do { try await server.serve() } catch { return .failure(error) }
                return .success(())
            }
            group.addTask {
                guard (try? await transport.listeningAddress) != nil else { return nil }
                socket.recordBound()
                log.info("serving \(storeRoot) on \(socket.path) (pid \(getpid()))")
                return nil
            }
            group.addTask {
                var count = 0
                for await signal in signals.stream {
                    count += 1
                    if count == 1 {
                        log.info("signal \(signal): finishing the calls in flight, then stopping")
                        server.beginGracefulShutdown()
                    } else {
                        log.info("signal \(signal) again: stopping now")
                        socket.remove()
                        exit(1)
                    }
                }
                return nil
            }
            var outcome: Result<Void, any Error> = .success(())
            while let next = await group.next() {
                guard let finished = next else { continue }
                outcome = finished
                signals.finish()
                group.cancelAll()
            }
            return outcome
        }
        socket.remove()
        if case .failure(let error) = outcome {
            throw Failure(description: "serving on \(socket.path) failed: \(error)")
        }
        log.info("stopped; \(socket.path) removed")
    }
}

/// Signals delivered as an async stream (the default actions are disabled while it lives).
final class SignalWatcher: @unchecked Sendable {
    let stream: AsyncStream<Int32>
    private let continuation: AsyncStream<Int32>.Continuation
    private let sources: [any DispatchSourceSignal]

    init(signals: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        self.continuation = continuation
        var sources = [any DispatchSourceSignal]()
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func finish() {
        for source in sources { source.cancel() }
        continuation.finish()
    }
}
