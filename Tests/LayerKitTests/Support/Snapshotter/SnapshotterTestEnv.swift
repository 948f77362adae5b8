import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What the snapshotter tests need: the layertool binary, the Go harness (containerd's
/// conformance suite and a containerd client, built once per test run from Debian's containerd
/// Go sources), and servers started in the background and always stopped.
enum SnapshotterTestEnv {
    static let harnessDir = repositoryRoot + "/Tests/containerd-conformance"

    /// Root (mounts, overlayfs, containerd), Go and Debian's containerd Go sources.
    static let harnessRequirements: [Requirement] = [
        .root(because: "mounts, overlayfs, containerd"), .tools("go"),
        .file("/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go",
              "containerd's Go sources (golang-github-containerd-containerd-dev)"),
        .file("/usr/share/gocode/src/gotest.tools/assert", "gotest.tools' Go sources (golang-github-gotestyourself-gotest.tools-dev)"),
    ]

    /// Also containerd, ctr, runc, skopeo and docker-registry for the end-to-end tests.
    static let containerdRequirements: [Requirement] = harnessRequirements
        + [.tools("containerd", "ctr", "runc", "containerd-shim-runc-v2", "skopeo", "docker-registry", "tar")]

    private static let harnessLock = NSLock()
    nonisolated(unsafe) private static var harness: Result<String, HarnessError>?

    struct HarnessError: Error, CustomStringConvertible {
        let description: String
    }

    /// The dir holding `conformance.test` and `snapshotter-tool`, built on first use of a test run
    /// (about a minute; Go's build cache under .build/go-cache makes later runs quick).
    static func harnessBinaries() throws -> String {
        try harnessLock.withLock {
            if harness == nil {
                // Under .build (ignored by git), rebuilt once per test run: nothing left in /tmp.
                let out = repositoryRoot + "/.build/snapshotter-harness"
                var environment = ProcessInfo.processInfo.environment
                environment["OUT"] = out
                environment["GOCACHE"] = environment["GOCACHE"] ?? repositoryRoot + "/.build/go-cache"
                let result = try run(harnessDir + "/build.sh", [], environment: environment)
                harness = result.status == 0 ? .success(out)
                    : .failure(HarnessError(description: "building the Go harness failed:\n\(result.stderr)\(result.stdout)"))
            }
            return try harness!.get()
        }
    }

    /// Whether something accepts connections on the unix socket `path`.
    static func socketAnswers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }
}
