import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// The userspace union run as a daemon process: how one is started and how it says it is ready.
///
/// The protocol: the daemon is the host executable run with `subcommand` and the arguments
/// `[--lower DIR]... --upper DIR --work DIR [--whiteout-form overlay|aufs] [--no-writeback-cache]
/// [--threads N] --ready-fd FD TARGET`. It mounts the union on TARGET, writes `ready\n` to FD once
/// the mount is live (or one error line, then exits non-zero), serves until TARGET is unmounted
/// or it gets SIGTERM/SIGINT/SIGHUP (then it unmounts itself), and exits 0.
///
/// `layertool fuse-serve` is such a daemon; a runtime can make its own binary one by handing its
/// arguments to `FuseDaemon.main(arguments:)`, or avoid a daemon with `InProcessFuseMounter`.
public enum FuseDaemon {
    /// What a daemon serves.
    public struct Configuration: Sendable, Equatable {
        public var lowers: [String]
        public var upper: String
        public var work: String
        public var target: String
        /// nil probes (overlay form where a 0/0 device can be made).
        public var whiteoutForm: UnionWhiteoutForm?
        public var writebackCache: Bool = true
        public var threads: UInt32?
        /// Where to write `ready` (or the error line).
        public var readyFD: Int32?

        public init(lowers: [String], upper: String, work: String, target: String) {
            self.lowers = lowers
            self.upper = upper
            self.work = work
            self.target = target
        }

        /// The daemon's command-line arguments (after the subcommand).
        public var arguments: [String] {
            var args = [String]()
            for lower in lowers { args += ["--lower", lower] }
            args += ["--upper", upper, "--work", work]
            switch whiteoutForm {
            case nil: break
            case .aufs: args += ["--whiteout-form", "aufs"]
            case .overlay: args += ["--whiteout-form", "overlay"]
            }
            if !writebackCache { args.append("--no-writeback-cache") }
            if let threads { args += ["--threads", String(threads)] }
            if let readyFD { args += ["--ready-fd", String(readyFD)] }
            return args + [target]
        }

        /// Parses the daemon's arguments (as `arguments` writes them).
        public init(arguments: [String]) throws(FuseServerError) {
            var lowers = [String](), upper: String?, work: String?, target: String?
            var form: UnionWhiteoutForm?, writeback = true, threads: UInt32?, readyFD: Int32?
            var i = 0
            func value() throws(FuseServerError) -> String {
                guard i + 1 < arguments.count else { throw FuseServerError("\(arguments[i]) needs a value") }
                i += 1
                return arguments[i]
            }
            while i < arguments.count {
                switch arguments[i] {
                case "--lower": lowers.append(try value())
                case "--upper": upper = try value()
                case "--work": work = try value()
                case "--whiteout-form":
                    switch try value() {
                    case "aufs": form = .aufs
                    case "overlay": form = .overlay(geteuid() == 0 ? .trusted : .user)
                    case let other: throw FuseServerError("--whiteout-form \(other): expected overlay or aufs")
                    }
                case "--no-writeback-cache": writeback = false
                case "--threads":
                    guard let n = UInt32(try value()), n > 0 else { throw FuseServerError("--threads needs a positive number") }
                    threads = n
                case "--ready-fd":
                    guard let fd = Int32(try value()) else { throw FuseServerError("--ready-fd needs a number") }
                    readyFD = fd
                case let arg where arg.hasPrefix("--"): throw FuseServerError("unknown option \(arg)")
                case let arg:
                    guard target == nil else { throw FuseServerError("more than one target: \(arg)") }
                    target = arg
                }
                i += 1
            }
            guard let upper, let work, let target else { throw FuseServerError("--upper, --work and a target are needed") }
            self.init(lowers: lowers, upper: upper, work: work, target: target)
            self.whiteoutForm = form
            self.writebackCache = writeback
            self.threads = threads
            self.readyFD = readyFD
        }
    }

    /// Runs a daemon from its arguments (as `Configuration.arguments` writes them) and returns the
    /// exit status: the whole life of a daemon process, for a host binary's entry point.
    public static func main(arguments: [String]) -> Int32 {
        do throws(FuseServerError) { return serve(try Configuration(arguments: arguments)) } catch {
            let line = "fuse-serve: \(error)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
            return 2
        }
    }

    /// Serves `configuration` in this process until the target is unmounted or a signal ends it,
    /// reporting readiness on its ready fd; returns the exit status (0 after a clean end).
    public static func serve(_ configuration: Configuration) -> Int32 {
        closeInheritedDescriptors(keeping: configuration.readyFD)
        let server: FuseUnionServer
        do {
            server = try makeServer(configuration)
            try server.mount(at: configuration.target)
        } catch {
            report("\(error)", to: configuration.readyFD)
            _ = "fuse-serve \(configuration.target): \(error)\n".withCString { write(2, $0, strlen($0)) }
            return 1
        }
        report("ready", to: configuration.readyFD)
        // 0 after an unmount, the signal's number after SIGTERM & co: both are a clean end.
        return server.serve() < 0 ? 1 : 0
    }

    static func makeServer(_ configuration: Configuration) throws -> FuseUnionServer {
        var options = UnionFileSystem.Options()
        options.whiteoutForm = configuration.whiteoutForm
        let union = try UnionFileSystem(lowers: configuration.lowers, upper: configuration.upper, work: configuration.work, options: options)
        var serverOptions = FuseUnionServer.Options()
        serverOptions.writebackCache = configuration.writebackCache
        if let threads = configuration.threads { serverOptions.maxThreads = max(1, threads) }
        return FuseUnionServer(union: union, options: serverOptions)
    }

    /// Starts `executable subcommand... ARGUMENTS` detached (a new session, stdio on /dev/null)
    /// with a ready pipe as fd 3, and waits (at most `timeout` seconds) until it reports the mount
    /// live. Returns the daemon's pid; throws with the daemon's own error line when it fails.
    public static func spawn(_ configuration: Configuration, executable: String, subcommand: [String] = ["fuse-serve"],
                             timeout: Double = 10) throws(MountError) -> Int32 {
        func fail(_ reason: String) -> MountError { MountError(path: configuration.target, "FUSE union: \(reason)") }
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw fail("pipe: \(String(cString: strerror(errno)))") }
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        // Close-on-exec for both ends: the child gets the write end only as its fd 3 (dup2 clears it).
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        defer { close(readEnd) }
        var daemon = configuration
        daemon.readyFD = 3
        let arguments = [executable] + subcommand + daemon.arguments

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // /dev/null is opened read-write without O_CREAT: it is only ever opened, never made.
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0) }
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(0x80 /* POSIX_SPAWN_SETSID */ | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        close(writeEnd)
        guard rc == 0 else { throw fail("cannot start \(executable): \(String(cString: strerror(rc)))") }

        // Read the one line.
        var line: [UInt8] = []
        let deadline = monotonicSeconds() + timeout
        while !line.contains(UInt8(ascii: "\n")) {
            let left = deadline - monotonicSeconds()
            if left <= 0 {
                kill(pid, SIGTERM)
                throw fail("the daemon was not ready after \(Int(timeout)) s")
            }
            var poller = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(left * 1000))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = read(readEnd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            line += buffer[..<n]
        }
        let text = String(decoding: line, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
        if text == "ready" { return pid }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        throw fail(text.isEmpty ? "the daemon exited without reporting (status \(status))" : text)
    }

    /// Closes every fd but stdio and the ready fd: a lock fd the starter held without
    /// close-on-exec (a store's flock) would otherwise stay held for as long as the daemon serves.
    private static func closeInheritedDescriptors(keeping readyFD: Int32?) {
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

    /// Writes one line to the ready fd and closes it, so the waiting parent sees the end.
    private static func report(_ line: String, to fd: Int32?) {
        guard let fd else { return }
        let text = Array((line + "\n").utf8)
        _ = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    private static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
