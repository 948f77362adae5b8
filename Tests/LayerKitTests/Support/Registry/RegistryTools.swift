import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Shared support for the registry tests: a real CNCF distribution registry (Debian's
// docker-registry) per configuration, a fault-injecting HTTP proxy, a token server that signs
// the tokens the registry verifies, certificates made with openssl, and running layertool with
// a chosen environment. Every server listens on 127.0.0.1 on a free port and is stopped (and its
// temp dir removed) when its suite ends, whatever the tests did.

/// Running layertool and the peers against the test registries, and the few socket helpers the
/// servers need.
enum RegistryTools {
    /// Expects two extracted trees (busybox: more than ten entries) to be equal entry by entry,
    /// dir mtimes and the root's own mtime left out.
    static func expectSameTree(_ expected: String, _ expectedName: String, _ actual: String, _ actualName: String = "layertool pull",
                               sourceLocation: SourceLocation = #_sourceLocation) {
        TreeSnapshot.expectSame(.unpacked(expected), expectedName, .unpacked(actual), actualName, atLeast: 11,
                                sourceLocation: sourceLocation)
    }

    /// Runs a program with extra environment variables (HOME, REGISTRY_AUTH_FILE, ...) added to
    /// this process's, or, with `replacingEnvironment`, to PATH alone.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    replacingEnvironment: Bool = false) throws -> ProcessResult {
        let base = replacingEnvironment ? ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"] : ProcessInfo.processInfo.environment
        return try LayerKitTests.run(executable, arguments, environment: base.merging(environment) { _, new in new })
    }

    /// `layertool ARGS` with a clean environment (PATH and whatever is given), so the user's own
    /// auth files never take part.
    static func layertool(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessResult {
        try run(Layertool.path, arguments, environment: environment, replacingEnvironment: true)
    }

    /// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts connections on 127.0.0.1:port.
    static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    /// Writes a config or key file.
    static func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
