/// Which extended attributes travel between layers and trees: the one policy used when a layer
/// is applied and when one is written.
///
/// Every xattr is carried — `security.capability`, `security.ima`, `user.*`, `trusted.*`, POSIX
/// ACLs (`system.posix_acl_*`) — except overlayfs's own (`trusted.overlay.*`, and `user.overlay.*`
/// for user-namespace mounts): it keeps its whiteout, opaque, redirect and metacopy state there, so
/// an archive could forge them, and a layer must never carry them. `security.selinux` is carried
/// only when asked. (containerd's `archive.Apply` and umoci keep `trusted.*` too.)
public struct XattrPolicy: Sendable, Equatable {
    /// Carry `security.selinux` labels. Off by default: a label from an image rarely means
    /// anything on the host, and a wrong one can make files unreadable.
    public var carriesSELinuxLabels: Bool

    public init(carriesSELinuxLabels: Bool = false) {
        self.carriesSELinuxLabels = carriesSELinuxLabels
    }

    /// The policy of a union's copy-up: what a reader saw stays, labels included.
    public static let copyUp = XattrPolicy(carriesSELinuxLabels: true)

    /// Whether the xattr `name` is taken from an archive or written into a layer.
    public func carries(_ name: String) -> Bool {
        if OverlayXattrNamespace.isOverlayXattr(name) { return false }
        if name == "security.selinux" { return carriesSELinuxLabels }
        return true
    }
}
