#if canImport(Glibc)
import Glibc
#endif

/// How a layer is written onto its target directory.
public struct ApplyOptions: Sendable {
    /// The shape of the result.
    public enum Format: Sendable, Equatable {
        /// Changes applied directly, like `tar -x` plus whiteout processing: the target is a full tree.
        case plain
        /// The layer on its own, in kernel overlayfs's format, for use as an overlay lower/upper dir:
        /// a whiteout becomes a char device 0/0, an opaque dir gets `<namespace>.overlay.opaque=y`.
        case overlay(OverlayXattrNamespace)
    }

    /// Where overlayfs keeps its own xattrs: `trusted.overlay.*` (root), or `user.overlay.*`
    /// for mounts with `userxattr` in a user namespace.
    public enum OverlayXattrNamespace: String, Sendable {
        case trusted
        case user
        var opaqueName: String { rawValue + ".overlay.opaque" }
    }

    public var format: Format
    /// Apply the archive's numeric uid/gid. Defaults to true when running as root (like GNU tar's
    /// `--same-owner`); without privilege files belong to the caller.
    public var preserveOwnership: Bool
    /// Apply `security.selinux` labels from the archive. Off by default: a label from an image
    /// rarely means anything on the host, and a wrong one can make files unreadable.
    public var applySELinuxLabels: Bool
    /// Overlay format only: the layers below this one, top first. Used to copy up a file that a
    /// hardlink entry names but that lives in a lower layer, and to give an implied parent dir the
    /// metadata it has below (rather than 0755 root:root, which would hide it).
    public var lowerDirs: [String]

    public init(format: Format = .plain,
                preserveOwnership: Bool = geteuid() == 0,
                applySELinuxLabels: Bool = false,
                lowerDirs: [String] = []) {
        self.format = format
        self.preserveOwnership = preserveOwnership
        self.applySELinuxLabels = applySELinuxLabels
        self.lowerDirs = lowerDirs
    }

    /// Whether an xattr from an archive is applied. `trusted.*` never is (overlayfs keeps its
    /// whiteout/opaque/redirect state there, so an archive could forge them), nor `user.overlay.*`
    /// (the same for user-namespace mounts); `security.selinux` only when asked.
    /// `security.capability`, `security.ima`, `user.*` and POSIX ACLs (`system.posix_acl_*`) are.
    public func appliesXattr(_ name: String) -> Bool {
        if name.hasPrefix("trusted.") { return false }
        if name.hasPrefix("user.overlay.") { return false }
        if name == "security.selinux" { return applySELinuxLabels }
        return true
    }
}
