#if canImport(Glibc)
import Glibc
#endif

/// Why a union file system operation failed: the errno to answer with, the operation and the
/// path in the union it concerned (`open "etc/passwd": Permission denied`).
public struct UnionError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The errno a FUSE reply or a syscall wrapper hands back.
    public let errno: Int32
    /// What was being done (`lookup`, `copy-up`, `rename`...).
    public let operation: String
    /// The path in the union (or in a backing layer, for setup errors).
    public let path: String

    public init(_ errno: Int32, _ operation: String, _ path: String) {
        self.errno = errno
        self.operation = operation
        self.path = path
    }

    /// The error the last failed syscall left in `errno`.
    static func last(_ operation: String, _ path: [UInt8]) -> UnionError {
        UnionError(Glibc.errno, operation, String(decoding: path, as: UTF8.self))
    }

    static func with(_ code: Int32, _ operation: String, _ path: [UInt8]) -> UnionError {
        UnionError(code, operation, String(decoding: path, as: UTF8.self))
    }

    public var description: String {
        "\(operation) \"\(path)\": \(String(cString: strerror(errno)))"
    }
}
