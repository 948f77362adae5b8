/// What to mount: read-only lower dirs, and for a writable mount an upper and a work dir.
public struct OverlayMountRequest: Sendable, Equatable {
    /// The lower dirs, top first (the order of overlayfs's `lowerdir=`). At least one.
    public var lowerDirs: [String]
    /// The writable upper dir; nil for a read-only mount.
    public var upperDir: String?
    /// The work dir (empty, on the upper dir's file system); required with `upperDir`.
    public var workDir: String?
    /// Mount read-only. Implied when there is no upper dir.
    public var readOnly: Bool
    /// Skip all syncs of the upper dir (`volatile`, Linux 5.10+): for throwaway containers. After
    /// a crash the upper dir must be thrown away; overlayfs refuses to mount it again.
    public var volatile: Bool
    /// Overlay markers in `user.overlay.*` xattrs instead of `trusted.overlay.*` (`userxattr`,
    /// Linux 5.11+): what a mount inside a user namespace needs.
    public var userXattr: Bool
    /// Shorter spellings of `lowerDirs`, relative to `shortBase`, used only by the mount(2)
    /// fallback when the full paths would not fit in one page of mount data (the store's `l/`
    /// links).
    public var shortLowerDirs: [String]?
    /// The dir `shortLowerDirs` are relative to.
    public var shortBase: String?

    public init(lowerDirs: [String], upperDir: String? = nil, workDir: String? = nil, readOnly: Bool = false,
                volatile: Bool = false, userXattr: Bool = false, shortLowerDirs: [String]? = nil, shortBase: String? = nil) {
        self.lowerDirs = lowerDirs
        self.upperDir = upperDir
        self.workDir = workDir
        self.readOnly = readOnly || upperDir == nil
        self.volatile = volatile
        self.userXattr = userXattr
        self.shortLowerDirs = shortLowerDirs
        self.shortBase = shortBase
    }

    /// The most lower dirs overlayfs stacks (the kernel's OVL_MAX_STACK).
    public static let maxLowerDirs = 500

    /// True when the mount is one read-only layer: overlayfs needs two lowers without an upper,
    /// so that case is a read-only bind mount (as containerd does it).
    public var isSingleReadOnlyLayer: Bool { upperDir == nil && lowerDirs.count == 1 }

    /// Options shared by both mount paths, after the dirs.
    var flagOptions: [String] {
        // redirect_dir=off keeps a renamed lower dir from becoming a redirect the diff engine
        // cannot read; with userxattr the kernel already refuses redirects (and rejects the option).
        var options = userXattr ? ["index=off"] : ["index=off", "redirect_dir=off"]
        if volatile && upperDir != nil { options.append("volatile") }
        if userXattr { options.append("userxattr") }
        return options
    }

    /// The mount as a runtime would perform it.
    public var spec: MountSpec {
        if isSingleReadOnlyLayer {
            return MountSpec(type: "bind", source: lowerDirs[0], options: ["ro", "rbind"])
        }
        var options = ["lowerdir=" + lowerDirs.map(Self.escapeLowerDir).joined(separator: ":")]
        if let upperDir, let workDir {
            options.append("upperdir=" + upperDir)
            options.append("workdir=" + workDir)
        }
        options += flagOptions
        if readOnly { options.append("ro") }
        return MountSpec(type: "overlay", source: "overlay", options: options)
    }

    /// Checks the request before anything is mounted.
    func validate() throws(MountError) {
        guard !lowerDirs.isEmpty else { throw MountError(path: "lowerdir", "an overlay needs at least one lower dir") }
        guard lowerDirs.count <= Self.maxLowerDirs else {
            throw MountError(path: lowerDirs[0], "\(lowerDirs.count) lower dirs: overlayfs stacks at most \(Self.maxLowerDirs)")
        }
        guard (upperDir == nil) == (workDir == nil) else {
            throw MountError(path: upperDir ?? workDir ?? "", "an upper dir and a work dir go together")
        }
        if let shortLowerDirs { precondition(shortLowerDirs.count == lowerDirs.count && shortBase != nil) }
    }

    /// `lowerdir=` separates dirs with `:`; a `:` or `\` inside a path is escaped with `\`.
    static func escapeLowerDir(_ path: String) -> String {
        var out = ""
        for c in path {
            if c == ":" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
