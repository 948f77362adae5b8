import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Which mount driver to use.
public enum MountDriver: String, Sendable, Codable, CaseIterable {
    /// Kernel overlayfs, falling back to the userspace union over FUSE where it cannot be mounted.
    case auto
    /// Kernel overlayfs only.
    case overlay
    /// The userspace union over FUSE only.
    case fuse
}

/// Starts a userspace union mount (the FUSE driver) of a request at a target, returning the
/// daemon's pid once the mount is live. The CLI supplies it; the library has no daemon of its own.
public typealias UserspaceMounter = (_ request: OverlayMountRequest, _ target: String) throws -> Int32

/// How `UnionMounter.mount` mounted a request.
public struct MountOutcome: Sendable, Equatable {
    /// `overlay` or `fuse`.
    public var driver: String
    /// For overlay, how (`mount-api`, `mount(2)`, `bind`); `fuse` for the FUSE union.
    public var method: String
    /// The FUSE daemon, for the FUSE driver.
    public var daemonPID: Int32?
    /// Why kernel overlayfs was not used (`.auto` only), if it was not.
    public var fallbackReason: String?
}

/// Mounts a union with the driver asked for: kernel overlayfs, the FUSE union, or overlayfs
/// falling back to the FUSE union when the kernel refuses it for want of privilege or support
/// (not for a bad request, which fails as it is).
public enum UnionMounter {
    public static func mount(_ request: OverlayMountRequest, at target: String, driver: MountDriver,
                             userspace: UserspaceMounter?) throws(MountError) -> MountOutcome {
        var fallback: String? = nil
        if driver != .fuse {
            do throws(MountError) {
                return MountOutcome(driver: "overlay", method: try OverlayMounter.mount(request, at: target).rawValue)
            } catch {
                guard driver == .auto, userspace != nil, error.meansOverlayUnavailable else { throw error }
                fallback = "kernel overlayfs: \(error.description)"
            }
        }
        guard let userspace else { throw MountError(path: target, "the FUSE driver is not available here") }
        guard request.upperDir != nil else {
            throw MountError(path: target, "the FUSE union needs an upper and a work dir (read-only mounts need the overlay driver)")
        }
        let pid: Int32
        do { pid = try userspace(request, target) } catch {
            throw MountError(path: target, "FUSE union: \(error)")
        }
        return MountOutcome(driver: "fuse", method: "fuse", daemonPID: pid, fallbackReason: fallback)
    }
}

extension MountError {
    /// Kernel answers that mean "overlayfs cannot be mounted here", as opposed to a bad request.
    public var meansOverlayUnavailable: Bool {
        guard let errno else { return false }
        return [EPERM, EACCES, ENODEV, ENOSYS, EOPNOTSUPP].contains(errno.rawValue)
    }
}
