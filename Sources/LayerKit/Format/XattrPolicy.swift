/// Which extended attributes travel between layers and trees: the one policy used when a layer
/// is applied and when one is written.
///
/// `security.capability`, `security.ima`, `user.*` and POSIX ACLs (`system.posix_acl_*`) are
/// carried. `trusted.*` never is (overlayfs keeps its whiteout, opaque and redirect state there,
/// so an archive could forge them), nor `user.overlay.*` (the same state for user-namespace
/// mounts); `security.selinux` only when asked.
public struct XattrPolicy: Sendable, Equatable {
    /// Carry `security.selinux` labels. Off by default: a label from an image rarely means
    /// anything on the host, and a wrong one can make files unreadable.
    public var carriesSELinuxLabels: Bool

    public init(carriesSELinuxLabels: Bool = false) {
        self.carriesSELinuxLabels = carriesSELinuxLabels
    }

    /// Whether the xattr `name` is taken from an archive or written into a layer.
    public func carries(_ name: String) -> Bool {
        if name.hasPrefix("trusted.") { return false }
        if OverlayXattrNamespace.isOverlayXattr(name) { return false }
        if name == "security.selinux" { return carriesSELinuxLabels }
        return true
    }
}
