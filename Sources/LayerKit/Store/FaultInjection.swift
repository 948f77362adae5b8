import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Crash points for testing the store's crash safety deterministically: once armed with
/// `POINT` (or `POINT:N` for its n-th pass), the process kills itself with SIGKILL there, as a
/// power cut or `kill -9` would. Unarmed, a check is one load. Points: `import.unpacked`,
/// `import.synced`, `import.renamed`, `import.linked`, `import.recorded`, `import.blobs`,
/// `gc.deleted`, `gc.removed-one`, `mount.recorded`, `mount.mounted`, `container.deleted`,
/// `commit.diffed`, `commit.blobs`, `snapshot.created-dirs`, `snapshot.commit.layer-dir`,
/// `snapshot.commit.recorded`, `snapshot.removed-record`, `stream-import.unpacked`, `stream-import.synced`,
/// `stream-import.blobs`, `stream-import.renamed`, `stream-import.linked`, `stream-import.recorded`. (`layertool` arms it from `LAYERKIT_STORE_CRASH`.)
public enum FaultInjection {
    private struct Target: Sendable {
        var point: String
        var pass: Int
        var passes = 0
    }

    private static let armed = Atomic<Bool>(false)
    private static let target = Mutex<Target?>(nil)

    /// Arms a crash point, `POINT` or `POINT:N`; nil or empty disarms.
    public static func arm(_ spec: String?) {
        guard let spec, !spec.isEmpty else {
            armed.store(false, ordering: .releasing)
            target.withLock { $0 = nil }
            return
        }
        let parts = spec.split(separator: ":", maxSplits: 1)
        target.withLock { $0 = Target(point: String(parts[0]), pass: parts.count > 1 ? Int(parts[1]) ?? 1 : 1) }
        armed.store(true, ordering: .releasing)
    }

    @inline(__always)
    static func point(_ name: String) {
        guard armed.load(ordering: .acquiring) else { return }
        let hit = target.withLock { (target: inout Target?) -> Bool in
            guard target?.point == name else { return false }
            target!.passes += 1
            return target!.passes == target!.pass
        }
        if hit { kill(getpid(), SIGKILL) }
    }
}
