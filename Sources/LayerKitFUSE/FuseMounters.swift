import Foundation
import LayerKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The FUSE driver as a daemon process: each mount is served by `executable subcommand...`
/// (`FuseDaemon`'s protocol), started detached, so the mount outlives the process that made it.
/// This is what `layertool` uses (`/proc/self/exe fuse-serve`).
public struct DaemonFuseMounter: UserspaceUnionMounter {
    public var executable: String
    public var subcommand: [String]

    public init(executable: String = "/proc/self/exe", subcommand: [String] = ["fuse-serve"]) {
        self.executable = executable
        self.subcommand = subcommand
    }

    public func mount(_ request: OverlayMountRequest, at target: String) throws(MountError) -> Int32 {
        guard let upper = request.upperDir, let work = request.workDir else {
            throw MountError(path: target, "the FUSE union needs an upper and a work dir")
        }
        return try FuseDaemon.spawn(FuseDaemon.Configuration(lowers: request.lowerDirs, upper: upper, work: work, target: target),
                                    executable: executable, subcommand: subcommand)
    }
}

/// The FUSE driver in this very process: each mount is served by threads of the caller's
/// process until it is unmounted (`umount`, `LayerStore.unmountContainer`) or the process ends.
/// For a long-running runtime that links LayerKit: no daemon, no executable to find.
public struct InProcessFuseMounter: UserspaceUnionMounter {
    public init() {}

    /// The servers running, by mount point, kept alive while they serve.
    private static let running = Mutex<[String: FuseUnionServer]>([:])

    public func mount(_ request: OverlayMountRequest, at target: String) throws(MountError) -> Int32 {
        guard let upper = request.upperDir, let work = request.workDir else {
            throw MountError(path: target, "the FUSE union needs an upper and a work dir")
        }
        let server: FuseUnionServer
        do {
            server = try FuseDaemon.makeServer(FuseDaemon.Configuration(lowers: request.lowerDirs, upper: upper, work: work, target: target))
            try server.mount(at: target, installSignalHandlers: false)
        } catch {
            throw MountError(path: target, "FUSE union: \(error)")
        }
        Self.running.withLock { $0[target] = server }
        let thread = Thread {
            server.serve()
            _ = Self.running.withLock { $0.removeValue(forKey: target) }
        }
        thread.name = "layerkit-fuse"
        thread.start()
        return getpid()
    }
}
