import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// What tests need from the machine (root, tools on PATH, kernel overlayfs, /dev/fuse), probed once,
// and the `.requires(...)` trait that skips a test or suite saying exactly what is missing. CI runs
// as root after `.ci/setup` has installed every tool, so there every test runs.

/// Whether the tests run as root (devices, ownership, trusted.* xattrs, mounts).
var isRoot: Bool { geteuid() == 0 }

/// The path of an executable on PATH, or nil.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}

/// The path of a tool on PATH; when it is missing, the test fails naming it. For tools `.ci/setup`
/// installs, and for tools a `.requires(.tools(...))` trait has checked already.
func requireTool(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    try #require(which(name), "no \(name) on PATH", sourceLocation: sourceLocation)
}

/// Something a test needs from the machine; `skipReason` says what is missing, nil when nothing is.
struct Requirement: Sendable {
    let skipReason: String?

    /// Running as root; `because` says what needs it.
    static func root(because why: String) -> Requirement {
        Requirement(skipReason: isRoot ? nil : "needs root (\(why))")
    }

    /// Every one of these tools on PATH; the reason names those that are not.
    static func tools(_ names: String...) -> Requirement { tools(names) }

    /// Every one of these tools on PATH; the reason names those that are not.
    static func tools(_ names: [String]) -> Requirement {
        let missing = names.filter { which($0) == nil }
        return Requirement(skipReason: missing.isEmpty ? nil : "no \(missing.joined(separator: ", ")) on PATH")
    }

    /// Kernel overlayfs: listed in /proc/filesystems, after `modprobe overlay` when it was not yet.
    static let kernelOverlay = Requirement(skipReason: KernelOverlay.available ? nil
                                           : "no kernel overlayfs (not in /proc/filesystems, even after modprobe overlay)")

    /// A file or dir that must be readable (`what` names it in the skip reason).
    static func file(_ path: String, _ what: String) -> Requirement {
        Requirement(skipReason: access(path, R_OK) == 0 ? nil : "no \(what) (\(path))")
    }

    /// A /dev/fuse this process can open for reading and writing.
    static var fuseDevice: Requirement {
        Requirement(skipReason: access("/dev/fuse", R_OK | W_OK) == 0 ? nil : "no usable /dev/fuse")
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test or suite only where every requirement is met; otherwise it is skipped, and the
    /// skip names everything that is missing.
    static func requires(_ requirements: Requirement..., sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        requires(requirements, sourceLocation: sourceLocation)
    }

    /// Runs the test or suite only where every requirement is met; otherwise it is skipped, and the
    /// skip names everything that is missing.
    static func requires(_ requirements: [Requirement], sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        let reasons = requirements.compactMap(\.skipReason)
        return .enabled(if: reasons.isEmpty, Comment(rawValue: reasons.joined(separator: "; ")), sourceLocation: sourceLocation)
    }
}
