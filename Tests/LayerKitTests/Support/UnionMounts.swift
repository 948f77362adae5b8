import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Shared by the Union* suites: the two drivers of the same union semantics — kernel overlayfs and
// the FUSE union (`layertool fuse-serve`) — mounted by a shell script inside
// `unshare -m --propagation private`, so no mount can outlive the test or leak into the host.

/// A way of mounting LOWER... + UPPER + WORK on a mount point.
enum UnionDriver: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case kernel
    case fuse
    /// The FUSE union writing aufs-form whiteouts (`.wh.NAME`), as it does where mknod is refused.
    case fuseAufs
    /// The FUSE union run in a user namespace (`unshare -Ur`): no `trusted.*` xattrs there, so
    /// opaque dirs are marked `user.overlay.opaque`. Only uid/gid 0 are mapped.
    case fuseUserNamespace
    /// The FUSE union without the kernel's writeback cache (`--no-writeback-cache`): every write
    /// and attribute change reaches the union as it happens.
    case fuseWithoutWritebackCache

    /// The drivers the semantics suite compares (all ids mapped).
    static let semanticsDrivers: [UnionDriver] = [.kernel, .fuse, .fuseAufs]

    var testDescription: String {
        switch self {
        case .kernel: return "kernel overlayfs"
        case .fuse: return "FUSE union"
        case .fuseAufs: return "FUSE union, aufs-form upper"
        case .fuseUserNamespace: return "FUSE union in a user namespace"
        case .fuseWithoutWritebackCache: return "FUSE union without writeback cache"
        }
    }
}

enum UnionMounts {
    static let sh = which("sh") ?? "/bin/sh"

    /// The tools the mount scripts use.
    static let tools = ["unshare", "mount", "umount", "perl", "getfattr", "setfattr", "mkfifo", "md5sum", "stat", "mknod"]

    /// What the suites that mount need: root, the scripts' tools, /dev/fuse and kernel overlayfs.
    static let requirements: [Requirement] = [.root(because: "mounts"), .tools(tools), .fuseDevice, .kernelOverlay]

    /// A single-quoted shell word.
    static func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: #"'\''"#) + "'" }

    /// Exit statuses of the mount script itself (the changes' own status is passed through).
    static let mountFailed: Int32 = 90

    /// The shell lines that mount (for `driver`) the lowers (top first), upper and work on
    /// `merged`, exiting `mountFailed` when that fails. The FUSE daemon's pid is left in $DPID
    /// (empty for the kernel), its stderr in `scratch`/daemon.err.
    static func mountLines(_ driver: UnionDriver, lowers: [String], upper: String, work: String,
                           merged: String, scratch: String) -> String {
        switch driver {
        case .kernel:
            return """
                mount -t overlay overlay -o \(q("lowerdir=" + lowers.joined(separator: ":") + ",upperdir=\(upper),workdir=\(work),redirect_dir=off,metacopy=off,index=off")) \(q(merged)) || exit \(mountFailed)
                DPID=
                """
        case .fuse, .fuseAufs, .fuseUserNamespace, .fuseWithoutWritebackCache:
            var lowerArgs = lowers.map { "--lower \(q($0))" }.joined(separator: " ")
            if driver == .fuseAufs { lowerArgs += " --whiteout-form aufs" }
            if driver == .fuseWithoutWritebackCache { lowerArgs += " --no-writeback-cache" }
            return """
                rm -f \(q(scratch + "/ready")); mkfifo \(q(scratch + "/ready")) || exit \(mountFailed)
                \(q(Layertool.path)) fuse-serve \(lowerArgs) --upper \(q(upper)) --work \(q(work)) --ready-fd 3 \(q(merged)) 3>\(q(scratch + "/ready")) 2>>\(q(scratch + "/daemon.err")) &
                DPID=$!
                read -r READY < \(q(scratch + "/ready"))
                [ "$READY" = ready ] || { echo "fuse-serve: $READY" >&2; exit \(mountFailed); }
                """
        }
    }

    /// Mounts, runs `changes` (sh, cwd = the merged dir; `show PATH...` prints what a path is),
    /// unmounts, and for FUSE checks the daemon exited 0 after the unmount.
    static func session(_ driver: UnionDriver, lowers: [String], upper: String, work: String, merged: String,
                        scratch: String, changes: String) throws -> ProcessResult {
        let script = """
            \(mountLines(driver, lowers: lowers, upper: upper, work: work, merged: merged, scratch: scratch))
            cleanup() { cd /; umount "$1" 2>/dev/null; }
            show() {
              for p in "$@"; do
                if [ ! -e "$p" ] && [ ! -L "$p" ]; then echo "$p: absent"; continue; fi
                t=$(stat -c %F "$p")
                case "$t" in
                  "regular file"|"regular empty file") echo "$p: file $(stat -c '%a %u:%g size=%s nlink=%h' "$p") $(md5sum < "$p" | cut -c1-12)";;
                  directory) echo "$p: dir $(stat -c '%a %u:%g' "$p")";;
                  "symbolic link") echo "$p: symlink -> $(readlink "$p")";;
                  *) echo "$p: $t $(stat -c '%a %u:%g %t:%T' "$p")";;
                esac
              done
            }
            xattrs() { getfattr --absolute-names -h -d -m - "$@" 2>&1 | grep -v '^$' | grep -v 'security.selinux'; }
            cd \(q(merged)) || { cleanup \(q(merged)); exit 91; }
            ( \(changes)
            )
            status=$?
            cd /
            umount \(q(merged)) || { echo "umount failed" >&2; exit 94; }
            if [ -n "$DPID" ]; then wait "$DPID" || { echo "fuse-serve exited $?" >&2; exit 95; }; fi
            exit $status
            """
        let namespaces = driver == .fuseUserNamespace ? ["-Urm"] : ["-m"]
        return try run(try requireTool("unshare"), namespaces + ["--propagation", "private", sh, "-c",
                                                        (driver == .fuseUserNamespace ? "LK_USERNS=1; " : "") + script])
    }

    /// Runs `script` with cwd `dir` (to build a lower layer), failing the test on a non-zero exit.
    static func build(_ dir: String, _ script: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try run(sh, ["-c", "set -e; cd \"$1\"; " + script, "sh", dir])
        try #require(r.status == 0, "building \(dir): \(r.stderr)", sourceLocation: sourceLocation)
    }

    /// A scratch dir with `lowers` (built by the scripts, top first), an empty upper, work and
    /// merged dirs.
    struct Layout {
        let tmp: TempDir
        let lowers: [String]
        let upper: String
        let work: String
        let merged: String

        init(_ label: String, lowers scripts: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            tmp = TempDir("union-\(label)")
            var lowers: [String] = []
            for (i, script) in scripts.enumerated() {
                let dir = tmp.mkdir("lower\(i + 1)")
                try UnionMounts.build(dir, script, sourceLocation: sourceLocation)
                lowers.append(dir)
            }
            self.lowers = lowers
            upper = tmp.mkdir("upper")
            work = tmp.mkdir("work")
            merged = tmp.mkdir("merged")
        }

        func session(_ driver: UnionDriver, _ changes: String) throws -> ProcessResult {
            try UnionMounts.session(driver, lowers: lowers, upper: upper, work: work, merged: merged, scratch: tmp.path, changes: changes)
        }

        var daemonErrors: String { (try? String(contentsOfFile: tmp.sub("daemon.err"), encoding: .utf8)) ?? "" }
    }

    /// No FUSE mount of ours is left in this (the host's) mount namespace.
    static func expectNoLeftoverMount(sourceLocation: SourceLocation = #_sourceLocation) {
        let info = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        #expect(!info.contains("fuse.layerkit-union"), "a layerkit-union mount is left in the host namespace", sourceLocation: sourceLocation)
    }
}
