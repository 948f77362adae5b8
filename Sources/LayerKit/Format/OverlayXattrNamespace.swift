/// Where overlayfs keeps its own xattrs: `trusted.overlay.*` (root in the initial user
/// namespace), or `user.overlay.*` for mounts with `userxattr` (a user namespace).
///
/// The names overlayfs reads there are its private state (opaque dirs, redirects, metacopy):
/// they never travel in a layer, and an archive may never set them.
public enum OverlayXattrNamespace: String, Sendable, Codable, CaseIterable {
    case trusted
    case user

    /// `trusted.overlay.` or `user.overlay.`.
    public var prefix: String { rawValue + ".overlay." }
    /// The xattr that marks an opaque dir (value `y`).
    public var opaque: String { prefix + "opaque" }

    /// The value of `opaque` on an opaque dir.
    public static let opaqueValue: [UInt8] = [UInt8(ascii: "y")]

    /// Whether `name` is overlayfs's own, in either namespace.
    public static func isOverlayXattr(_ name: String) -> Bool {
        allCases.contains { name.hasPrefix($0.prefix) }
    }

    /// Whether a dir's xattrs mark it opaque, in either namespace.
    static func marksOpaque(_ xattrs: [(name: String, value: [UInt8])]) -> Bool {
        xattrs.contains { x in allCases.contains { $0.opaque == x.name } && x.value == opaqueValue }
    }

    /// The overlayfs feature an xattr records that makes an upper dir unreadable without its
    /// lowers (`redirect_dir`, `metacopy`), if it records one.
    static func lowerDependentFeature(_ name: String) -> String? {
        for ns in allCases where name.hasPrefix(ns.prefix) {
            switch name.dropFirst(ns.prefix.count) {
            case "redirect": return "redirect_dir"
            case "metacopy": return "metacopy"
            default: return nil
            }
        }
        return nil
    }
}
