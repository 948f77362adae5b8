#if canImport(Glibc)
import Glibc
#endif

/// Why the union daemon did not come up.
struct FuseSpawnError: Error, CustomStringConvertible {
    let description: String
}

/// Starts `layertool fuse-serve` (this very binary, `/proc/self/exe`) detached — a new session,
/// stdio on /dev/null — with a ready pipe, and waits (at most 10 s) until it reports the mount
/// live. Returns the daemon's pid; it exits by itself when TARGET is unmounted (`umount2`) or
/// on SIGTERM. Throws with the daemon's own error line when it fails.
func spawnFuseDaemon(lowers: [String], upper: String, work: String, target: String) throws -> pid_t {
    try spawnFuseDaemon(lowers: lowers, upper: upper, work: work, target: target, executable: "/proc/self/exe")
}

/// The same, starting `executable` (a layertool binary) instead of this process's own.
func spawnFuseDaemon(lowers: [String], upper: String, work: String, target: String, executable: String) throws -> pid_t {
    var pipeFDs: [Int32] = [-1, -1]
    guard pipe(&pipeFDs) == 0 else { throw FuseSpawnError(description: "pipe: \(String(cString: strerror(errno)))") }
    let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
    // Close-on-exec for both ends: the child gets the write end only as its fd 3 (dup2 clears it).
    _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
    _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
    defer { close(readEnd) }
    let readyFD: Int32 = 3
    var arguments = [executable, "fuse-serve"]
    for lower in lowers { arguments += ["--lower", lower] }
    arguments += ["--upper", upper, "--work", work, "--ready-fd", String(readyFD), target]

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    // /dev/null is opened read-write without O_CREAT: it is only ever opened, never made.
    for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0) }
    posix_spawn_file_actions_adddup2(&actions, writeEnd, readyFD)
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
    guard rc == 0 else { throw FuseSpawnError(description: "cannot start fuse-serve: \(String(cString: strerror(rc)))") }

    // Read the one line, up to 10 s.
    var line: [UInt8] = []
    let deadline = monotonicSeconds() + 10
    while !line.contains(UInt8(ascii: "\n")) {
        let left = deadline - monotonicSeconds()
        if left <= 0 {
            kill(pid, SIGTERM)
            throw FuseSpawnError(description: "fuse-serve \(target): not ready after 10 s")
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
    throw FuseSpawnError(description: text.isEmpty ? "fuse-serve \(target): exited without reporting (status \(status))" : text)
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
