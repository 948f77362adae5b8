import Foundation
import Testing
@testable import layertool
import LayerKitFUSE
#if canImport(Glibc)
import Glibc
#endif

// FuseDaemon.spawn, as `layertool mount --driver fuse` uses it: the daemon is up when it returns,
// `umount2(target)` ends it with status 0, and a failure throws the daemon's own error line.
// (It mounts in the test process's namespace, so each test unmounts before it returns.)

@Suite(.serialized, .requires(UnionMounts.requirements))
struct UnionSpawnTests {
    @Test func theDaemonIsServingWhenSpawnReturnsAndUmountEndsIt() throws {
        let tmp = TempDir("union-spawn")
        let lower = tmp.mkdir("lower"), upper = tmp.mkdir("upper"), work = tmp.mkdir("work"), target = tmp.mkdir("merged")
        try "hello\n".write(toFile: lower + "/a", atomically: false, encoding: .utf8)
        // FuseDaemon.spawn starts /proc/self/exe: the test runner is not layertool, so point it at the built binary.
        let pid = try FuseDaemon.spawn(FuseDaemon.Configuration(lowers: [lower], upper: upper, work: work, target: target), executable: Layertool.path)
        var unmounted = false
        defer { if !unmounted { umount2(target, 2 /* MNT_DETACH */); kill(pid, SIGKILL) } }
        let info = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        let canonical = URL(fileURLWithPath: target).standardizedFileURL.path
        #expect(info.split(separator: "\n").contains { $0.contains(" \(canonical) ") && $0.contains(" - fuse.layerkit-union ") },
                "no fuse.layerkit-union mount on \(canonical) in mountinfo")
        #expect(try String(contentsOfFile: target + "/a", encoding: .utf8) == "hello\n")
        try "new\n".write(toFile: target + "/b", atomically: false, encoding: .utf8)
        #expect(umount2(target, 0) == 0, "umount2: \(String(cString: strerror(errno)))")
        unmounted = true
        var status: Int32 = -1
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(status == 0, "daemon wait status \(status)")
        #expect(try String(contentsOfFile: upper + "/b", encoding: .utf8) == "new\n")
        UnionMounts.expectNoLeftoverMount()
    }

    @Test func aDaemonThatCannotStartThrowsItsErrorLine() throws {
        let tmp = TempDir("union-spawn-fail")
        let upper = tmp.mkdir("upper"), work = tmp.mkdir("work"), target = tmp.mkdir("merged")
        do {
            let pid = try FuseDaemon.spawn(FuseDaemon.Configuration(lowers: [tmp.sub("missing")], upper: upper, work: work, target: target), executable: Layertool.path)
            umount2(target, 2)
            kill(pid, SIGKILL)
            Issue.record("FuseDaemon.spawn returned for a missing lower dir")
        } catch {
            #expect("\(error)" == "\(target): FUSE union: open layer \"\(tmp.sub("missing"))\": No such file or directory")
        }
        UnionMounts.expectNoLeftoverMount()
    }
}

extension UnionSpawnTests {
    @Test func theDaemonInheritsNoOtherFileDescriptor() throws {
        let tmp = TempDir("union-spawn-fds")
        let lower = tmp.mkdir("lower"), upper = tmp.mkdir("upper"), work = tmp.mkdir("work"), target = tmp.mkdir("merged")
        // A lock held through an fd without close-on-exec, as a caller's store lock might be.
        let lockPath = tmp.sub("lock")
        let lockFD = open(lockPath, O_RDWR | O_CREAT, 0o600)
        try #require(lockFD >= 0)
        try #require(flock(lockFD, LOCK_EX) == 0)
        let pid = try FuseDaemon.spawn(FuseDaemon.Configuration(lowers: [lower], upper: upper, work: work, target: target), executable: Layertool.path)
        defer {
            umount2(target, 0)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        close(lockFD)
        let again = open(lockPath, O_RDWR)
        defer { close(again) }
        #expect(flock(again, LOCK_EX | LOCK_NB) == 0, "the daemon still holds the caller's lock")
    }
}
