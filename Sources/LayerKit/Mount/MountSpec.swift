/// A mount described for a runtime that mounts by itself, as containerd's snapshotters hand
/// mounts to their callers: `mount -t TYPE -o OPTIONS SOURCE TARGET`.
///
/// For an overlay the options hold every lower dir in one `lowerdir=` option, so a runtime using
/// mount(2) meets the one-page limit on mount data with deep images; `OverlayMounter` itself
/// avoids that limit with the new mount API.
public struct MountSpec: Sendable, Codable, Equatable {
    /// The file system type: `overlay`, or `bind` for a single read-only layer.
    public var type: String
    /// The source: `overlay`, or the directory to bind.
    public var source: String
    /// Mount options (`lowerdir=...`, `upperdir=...`, `workdir=...`, `ro`, `rbind`, ...).
    public var options: [String]

    public init(type: String, source: String, options: [String]) {
        self.type = type
        self.source = source
        self.options = options
    }

    /// The spec as a `mount` command line, for people.
    public var commandLine: String {
        "mount -t \(type) -o \(options.joined(separator: ",")) \(source) TARGET"
    }
}
