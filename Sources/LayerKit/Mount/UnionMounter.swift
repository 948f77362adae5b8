import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// How `UnionMounter.mount` mounted a request.
public struct MountOutcome: Sendable, Equatable {
    /// `.overlay` or `.fuse`.
    public var driver: MountDriver
    /// How: the mount API, mount(2), a bind of a single layer, or FUSE.
    public var method: MountMethod
    /// The process serving a FUSE mount.
    public var daemonPID: Int32?
    /// Why kernel overlayfs was not used (`.auto` only), if it was not.
    public var fallbackReason: String?
}

/// Mounts a union with the driver asked for: kernel overlayfs, the FUSE union, or overlayfs
/// falling back to the FUSE union when the kernel refuses it for want of privilege or support
/// (not for a bad request, which fails as it is).
public enum UnionMounter {
    public static func mount(_ request: OverlayMountRequest, at target: String, driver: MountDriver,
                             userspace: (any UserspaceUnionMounter)?, options: OverlayMounter.Options = .init()) throws(MountError) -> MountOutcome {
        var fallback: String? = nil
        try OverlayMounter.checkTarget(target)
        if driver != .fuse {
            do throws(MountError) {
                return MountOutcome(driver: .overlay, method: try OverlayMounter.mount(request, at: target, options: options))
            } catch {
                guard driver == .auto, userspace != nil, error.meansOverlayUnavailable else { throw error }
                fallback = "kernel overlayfs: \(error.description)"
            }
        }
        guard let userspace else { throw MountError(path: target, "the FUSE driver is not available here") }
        guard request.upperDir != nil else {
            throw MountError(path: target, "the FUSE union needs an upper and a work dir (read-only mounts need the overlay driver)")
        }
        let pid = try userspace.mount(request, at: target)
        return MountOutcome(driver: .fuse, method: .fuse, daemonPID: pid, fallbackReason: fallback)
    }
}

extension MountError {
    /// Kernel answers that mean "overlayfs cannot be mounted here", as opposed to a bad request.
    public var meansOverlayUnavailable: Bool {
        guard let errno else { return false }
        return [EPERM, EACCES, ENODEV, ENOSYS, EOPNOTSUPP].contains(errno.rawValue)
    }
}
