import SystemPackage

/// Why a mount or unmount failed: the target, the reason, and what the kernel said about it
/// (overlayfs explains a refused mount in the file system context's log; that text is kept).
public struct MountError: Error, CustomStringConvertible, Sendable {
    /// The mount point (or source dir) concerned.
    public var path: String
    /// A short human-readable reason.
    public var reason: String
    /// The errno of the failed call, when one failed.
    public var errno: Errno?
    /// Lines the kernel logged while the mount was being set up (`overlayfs: ...`).
    public var kernelMessages: [String]

    public init(path: String, _ reason: String, errno: Errno? = nil, kernelMessages: [String] = []) {
        self.path = path
        self.reason = reason
        self.errno = errno
        self.kernelMessages = kernelMessages
    }

    public var description: String {
        var text = "\(path): \(reason)"
        if let errno { text += ": \(errno.description)" }
        if !kernelMessages.isEmpty { text += " (kernel: \(kernelMessages.joined(separator: "; ")))" }
        return text
    }

    static func lastErrno(path: String, _ reason: String, kernelMessages: [String] = []) -> MountError {
        MountError(path: path, reason, errno: Errno(rawValue: Glibc.errno), kernelMessages: kernelMessages)
    }
}

#if canImport(Glibc)
import Glibc
#endif
