/// The mounts of a containerd snapshot, in the forms containerd mounts by itself (with mount(2)):
///
/// | snapshot | mount |
/// |---|---|
/// | active, no parent | `bind` of its upper dir, `rw` |
/// | active on a chain | `overlay`: `lowerdir=` the chain (top first), `upperdir=`, `workdir=` |
/// | view of nothing | `bind` of an empty dir, `ro` |
/// | view of one layer | `bind` of the layer's diff dir, `ro` |
/// | view of a chain | `overlay` with `lowerdir=` only (read-only by nature) |
///
/// containerd's differ writes a layer straight into an overlay's `upperdir` and reads its parents
/// from `lowerdir`, so those hold real paths. mount(2) takes one page (4096 bytes) of data:
/// when the options reach 3584 bytes, containerd rewrites `lowerdir` relative to the dirs'
/// common parent and mounts from there. Full diff paths (about 80 bytes each) would stop that at
/// about 50 layers, so a snapshot whose options would not fit gets `ROOT/snapshots/<id>/lower/<n>`
/// links to its layers (`0` the top) and lists those: after containerd's rewrite each layer
/// costs 2–4 bytes, and the kernel's 500-layer maximum fits.
struct SnapshotMountPlan {
    /// containerd rewrites `lowerdir` when the options reach this many bytes (a page less its margin).
    static let compactionThreshold = 4096 - 512

    let paths: StorePaths
    let id: Int64
    /// The parent's layers, top first.
    let chain: [Digest]
    let kind: SnapshotKind
    let userXattr: Bool

    var mounts: [MountSpec] {
        switch (kind, chain.count) {
        case (.active, 0):
            return [MountSpec(type: "bind", source: paths.snapshotUpperDir(id), options: ["rbind", "rw"])]
        case (.view, 0):
            return [MountSpec(type: "bind", source: paths.snapshotEmptyDir(id), options: ["rbind", "ro"])]
        case (.view, 1):
            return [MountSpec(type: "bind", source: paths.diffDir(chain[0]), options: ["rbind", "ro"])]
        default:
            let lowers = Self.needsLowerLinks(paths: paths, id: id, chain: chain, kind: kind, userXattr: userXattr)
                ? chain.indices.map { paths.snapshotLowerLinksDir(id) + "/\($0)" }
                : chain.map(paths.diffDir)
            return [MountSpec(type: "overlay", source: "overlay", options: overlayOptions(lowers: lowers))]
        }
    }

    private func overlayOptions(lowers: [String]) -> [String] {
        // index=off: layers are shared by many mounts; redirect_dir=off keeps an upper dir a
        // plain layer diff (with userxattr the kernel refuses redirects and the option).
        var options = userXattr ? ["index=off", "userxattr"] : ["index=off", "redirect_dir=off"]
        if kind == .active {
            options.append("workdir=" + paths.snapshotWorkDir(id))
            options.append("upperdir=" + paths.snapshotUpperDir(id))
        }
        options.append("lowerdir=" + lowers.joined(separator: ":"))
        return options
    }

    /// Whether the snapshot's overlay options with full diff paths would reach containerd's
    /// rewrite threshold (then the snapshot gets `lower/` links).
    static func needsLowerLinks(paths: StorePaths, id: Int64, chain: [Digest], kind: SnapshotKind, userXattr: Bool) -> Bool {
        let overlay = (kind == .active && !chain.isEmpty) || (kind == .view && chain.count >= 2)
        guard overlay else { return false }
        let full = SnapshotMountPlan(paths: paths, id: id, chain: chain, kind: kind, userXattr: userXattr)
            .overlayOptions(lowers: chain.map(paths.diffDir))
        return full.reduce(0) { $0 + $1.utf8.count } >= compactionThreshold
    }
}
