import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Crash points for testing the store's crash safety deterministically: with
/// `LAYERKIT_STORE_CRASH=<point>` (or `<point>:<n>` for its n-th pass) in the environment, the
/// process kills itself with SIGKILL there, as a power cut or `kill -9` would. Unset, a check is
/// one comparison. Points: `import.unpacked`, `import.synced`, `import.renamed`, `import.linked`,
/// `import.recorded`, `import.blobs`, `gc.deleted`, `gc.removed-one`, `mount.recorded`,
/// `mount.mounted`, `container.deleted`, `commit.diffed`, `commit.blobs`.
enum FaultInjection {
    private static let target: (point: String, pass: Int)? = {
        guard let spec = ProcessInfo.processInfo.environment["LAYERKIT_STORE_CRASH"], !spec.isEmpty else { return nil }
        let parts = spec.split(separator: ":", maxSplits: 1)
        return (String(parts[0]), parts.count > 1 ? Int(parts[1]) ?? 1 : 1)
    }()

    nonisolated(unsafe) private static var passes = 0
    private static let lock = NSLock()

    @inline(__always)
    static func point(_ name: String) {
        guard let target, target.point == name else { return }
        lock.lock()
        passes += 1
        let hit = passes == target.pass
        lock.unlock()
        if hit { kill(getpid(), SIGKILL) }
    }
}
