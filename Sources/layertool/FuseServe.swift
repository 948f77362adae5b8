import ArgumentParser
import LayerKit
import LayerKitFUSE
#if canImport(Glibc)
import Glibc
#endif

/// `layertool fuse-serve`: the userspace union daemon (hidden; `mount --driver fuse` starts it
/// through `spawnFuseDaemon`).
///
/// Contract: mounts the union on TARGET, writes `ready\n` to `--ready-fd` once the mount is live
/// (or one error line, then exits non-zero), serves until TARGET is unmounted (`umount`,
/// `fusermount3 -u`) or SIGTERM/SIGINT/SIGHUP (then it unmounts itself), and exits 0.
struct FuseServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuse-serve",
        abstract: "Serve a copy-up union of LOWER dirs under UPPER on TARGET over FUSE.",
        shouldDisplay: false
    )

    @Option(name: .customLong("lower"), help: "A lower dir, top first (repeat).")
    var lowers: [String] = []

    @Option(help: "The writable upper dir.")
    var upper: String

    @Option(help: "A work dir on the upper dir's file system.")
    var work: String

    @Option(name: .customLong("ready-fd"), help: "An fd to write \"ready\" (or an error line) to.")
    var readyFD: Int32?

    @Option(name: .customLong("whiteout-form"),
            help: "overlay or aufs: force how deletions are recorded in the upper (default: overlay where a 0/0 device can be made).")
    var whiteoutForm: String?

    @Flag(name: .customLong("no-writeback-cache"),
          help: "Write through to the upper on every write(), so that a full disk fails the write itself rather than a later close() or fsync().")
    var noWritebackCache = false

    @Option(help: "Worker threads serving requests (default: one per CPU, at least two).")
    var threads: UInt32?

    @Argument(help: "The mount point.")
    var target: String

    func run() throws {
        closeInheritedDescriptors()
        let server: FuseUnionServer
        do {
            var options = UnionFileSystem.Options()
            switch whiteoutForm {
            case nil: break
            case "aufs": options.whiteoutForm = .aufs
            case "overlay": options.whiteoutForm = .overlay(geteuid() == 0 ? .trusted : .user)
            case let other?: throw FuseServerError("--whiteout-form \(other): expected overlay or aufs")
            }
            let union = try UnionFileSystem(lowers: lowers, upper: upper, work: work, options: options)
            var serverOptions = FuseUnionServer.Options()
            serverOptions.writebackCache = !noWritebackCache
            if let threads { serverOptions.maxThreads = max(1, threads) }
            server = FuseUnionServer(union: union, options: serverOptions)
            try server.mount(at: target)
        } catch {
            let line = "layertool: fuse-serve \(target): \(error)"
            report(line)
            printError(line)
            throw ExitCode(1)
        }
        report("ready")
        // 0 after an unmount, the signal's number after SIGTERM & co: both are a clean end.
        if server.serve() < 0 { throw ExitCode(1) }
    }

    /// Closes every fd but stdio and the ready fd: a lock fd the starter held without
    /// close-on-exec (a store's flock) would otherwise stay held for as long as the daemon serves.
    private func closeInheritedDescriptors() {
        guard let dir = opendir("/proc/self/fd") else { return }
        let own = dirfd(dir)
        var open: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = Int32(name), fd > 2, fd != own, fd != readyFD { open.append(fd) }
        }
        closedir(dir)
        for fd in open { close(fd) }
    }

    private func printError(_ line: String) {
        let text = Array((line + "\n").utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// Writes one line to the ready fd and closes it, so the waiting parent sees the end.
    private func report(_ line: String) {
        guard let fd = readyFD else { return }
        let text = Array((line + "\n").utf8)
        _ = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}
