/// Which mount driver to use (asked for), or was used (recorded).
public enum MountDriver: String, Sendable, Codable, CaseIterable {
    /// Kernel overlayfs, falling back to the userspace union over FUSE where it cannot be mounted.
    case auto
    /// Kernel overlayfs only.
    case overlay
    /// The userspace union over FUSE only.
    case fuse
}

/// How a union was mounted.
public enum MountMethod: String, Sendable, Codable, CaseIterable {
    /// The new mount API: fsopen/fsconfig("lowerdir+")/fsmount/move_mount.
    case mountAPI = "mount-api"
    /// mount(2) with the options as one page of mount data.
    case mountSyscall = "mount(2)"
    /// A read-only bind mount of a single layer.
    case bind
    /// The userspace union over FUSE.
    case fuse
}

/// Serves a union from userspace: the FUSE driver. `LayerKitFUSE` provides the implementations
/// (in this process, or in a daemon process); the library itself links no FUSE code.
public protocol UserspaceUnionMounter: Sendable {
    /// Mounts `request` at `target` (an existing dir) and returns once the mount is live, with the
    /// pid of the process serving it (this process's own for an in-process server). It ends when
    /// the target is unmounted.
    func mount(_ request: OverlayMountRequest, at target: String) throws(MountError) -> Int32
}
