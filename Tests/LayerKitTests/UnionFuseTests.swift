import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The FUSE union through a real mount (`layertool fuse-serve` in a private mount namespace): what
// only it does (mountinfo, refusing overlayfs's xattrs, statfs of the upper), the diff engine on
// the upper it wrote, parallel load, and bad conditions that must give errors, never a crash.

@Suite(.serialized, .requires(UnionMounts.requirements))
struct UnionFuseTests {
    @Test func mountShowsAsFuseLayerkitUnionRefusesOverlayXattrsAndReportsTheUppersStatfs() throws {
        let layout = try UnionMounts.Layout("fuse-basics", lowers: ["echo > f; mkdir d"])
        let r = try layout.session(.fuse, """
            grep -c ' fuse.layerkit-union layerkit-union ' /proc/self/mountinfo
            grep ' fuse.layerkit-union ' /proc/self/mountinfo | grep -o 'default_permissions,allow_other'
            setfattr -n trusted.overlay.opaque -v y f 2>&1 | sed 's/.*: //'
            setfattr -n user.overlay.opaque -v y d 2>&1 | sed 's/.*: //'
            [ "$(stat -f -c '%b %S' .)" = "$(stat -f -c '%b %S' \(UnionMounts.q(layout.upper)))" ] && echo statfs of the upper
            """)
        #expect(r.status == 0, "\(r.stderr) \(layout.daemonErrors)")
        #expect(r.stdout == "1\ndefault_permissions,allow_other\nOperation not permitted\nOperation not permitted\nstatfs of the upper\n")
        // Nothing was copied up by the refused changes.
        #expect(try FileManager.default.contentsOfDirectory(atPath: layout.upper).isEmpty)
        UnionMounts.expectNoLeftoverMount()
    }

    /// `layertool diff --upper` on an upper the FUSE union wrote, applied onto the lower, gives
    /// the merged tree as seen through the mount.
    @Test(arguments: [UnionDriver.fuse, .fuseAufs, .fuseUserNamespace])
    func diffOfTheUpperItWroteGivesTheMergedTree(_ driver: UnionDriver) throws {
        let layout = try UnionMounts.Layout("fuse-diff", lowers: [
            "echo a > a; echo b > b; mkdir d; echo x > d/x; mkdir e; echo z > e/z; ln -s a s; mkfifo p; truncate -s 8M sparse; setfattr -n user.k -v v a",
        ])
        let newCopy = layout.tmp.mkdir("newcopy")
        let r = try layout.session(driver, """
            set -e
            echo more >> a; rm b; rm -r e; mkdir e; echo new > e/n; chmod 600 d/x; chown -h 5:6 s || [ -n "${LK_USERNS:-}" ]
            ln a d/a2; mv d/x x-moved; setfattr -n user.k -v changed a; printf Z >> sparse
            cp -a . \(UnionMounts.q(newCopy))/
            """)
        try #require(r.status == 0, "\(r.stderr) \(layout.daemonErrors)")
        let layer = layout.tmp.sub("upper.tar")
        let d = try Layertool.run(["diff", "--upper", layout.upper, "-o", layer])
        try #require(d.status == 0, "layertool diff --upper: \(d.stderr)")
        let applied = layout.tmp.sub("applied")
        try copyTree(layout.lowers[0], applied)
        let u = try Layertool.run(["unpack", layer, applied])
        try #require(u.status == 0, "layertool unpack: \(u.stderr)")
        var options = TreeSnapshot.Options()
        options.mtimes = false
        let merged = TreeSnapshot(newCopy, options: options)
        #expect(merged.nodes["b"] == nil && merged.nodes["e/n"] != nil, "the changes did not happen through the mount")
        // The upper's form: 0/0 devices for deletions, and the opaque dir marked in the namespace
        // the daemon may use (user.* in a user namespace), or aufs markers.
        let dump = try run(try requireTool("getfattr"), ["-R", "-P", "-h", "-d", "-m", "-", "--absolute-names", layout.upper]).stdout
        switch driver {
        case .fuseAufs: #expect(FileManager.default.fileExists(atPath: layout.upper + "/e/.wh..wh..opq") && FileManager.default.fileExists(atPath: layout.upper + "/.wh.b"))
        case .fuseUserNamespace: #expect(dump.contains("user.overlay.opaque=\"y\"") && !dump.contains("trusted.overlay"), "\(dump)")
        default: #expect(dump.contains("trusted.overlay.opaque=\"y\""), "\(dump)")
        }
        let diff = merged.differences(from: TreeSnapshot(applied, options: options))
        #expect(diff.isEmpty, "LOWER + diff --upper differs from the merged tree:\n\(diff.joined(separator: "\n"))")
        UnionMounts.expectNoLeftoverMount()
    }

    /// Parallel writers (new files and copy-ups of lower files) and readers over thousands of files;
    /// after the unmount every write is in the upper and no marker was ever visible.
    @Test func parallelWritersAndReadersLoseNothing() throws {
        let layout = try UnionMounts.Layout("fuse-stress", lowers: [
            "mkdir low; cd low; i=0; while [ $i -lt 2000 ]; do echo lower$i > f$i; i=$((i+1)); done",
        ])
        let r = try layout.session(.fuse, """
            writer() { mkdir -p w$1; i=0; while [ $i -lt 1000 ]; do echo "$1-$i" > w$1/f$i; i=$((i+1)); done; }
            appender() { i=$1; while [ $i -lt 2000 ]; do echo up >> low/f$i; i=$((i+4)); done; }
            remover() { i=$1; while [ $i -lt 2000 ]; do rm low/f$i; i=$((i+4)); done; }
            reader() { n=0; while [ $n -lt 20 ]; do find . > /dev/null; ls -A low | grep -c -e '^\\.wh\\.' -e '^#layerkit' ; cat low/f1* > /dev/null 2>&1; n=$((n+1)); done; }
            writer 1 & writer 2 & writer 3 & writer 4 & appender 0 & appender 1 & remover 2 & reader > r1.out & reader > r2.out &
            wait
            cat r1.out r2.out | sort -u
            rm r1.out r2.out
            find w1 w2 w3 w4 -type f | wc -l; ls low | wc -l
            cat low/f0 low/f5 low/f7 2>&1
            """)
        #expect(r.status == 0, "\(r.stderr) \(layout.daemonErrors)")
        #expect(r.stdout == "0\n4000\n1500\nlower0\nup\nlower5\nup\nlower7\n", "got:\n\(r.stdout)\nstderr: \(r.stderr)")
        // The upper, read directly: every new file with its content, the copy-ups, the whiteouts.
        var missing: [String] = []
        for w in 1...4 {
            for i in 0..<1000 where (try? String(contentsOfFile: layout.upper + "/w\(w)/f\(i)", encoding: .utf8)) != "\(w)-\(i)\n" {
                missing.append("w\(w)/f\(i)")
            }
        }
        for i in 0..<2000 {
            var st = stat()
            let exists = lstat(layout.upper + "/low/f\(i)", &st) == 0
            switch i % 4 {
            case 0, 1:
                if (try? String(contentsOfFile: layout.upper + "/low/f\(i)", encoding: .utf8)) != "lower\(i)\nup\n" { missing.append("low/f\(i)") }
            case 2:
                if !(exists && st.st_mode & 0o170000 == 0o020000 && st.st_rdev == 0) { missing.append("whiteout low/f\(i)") }
            default:
                if exists { missing.append("low/f\(i) copied up without a change") }
            }
        }
        #expect(missing.isEmpty, "\(missing.count) wrong in the upper, first: \(missing.prefix(10))")
        let work = try FileManager.default.contentsOfDirectory(atPath: layout.work)
        #expect(work.isEmpty, "left in the work dir: \(work.prefix(5))")
        UnionMounts.expectNoLeftoverMount()
    }

    @Test func unreadableAndVanishingLowerEntriesGiveErrorsAndTheDaemonGoesOn() throws {
        let layout = try UnionMounts.Layout("fuse-lower-errors", lowers: [
            "echo secret > secret; chmod 000 secret; mkdir d; echo x > d/x; echo y > y; mkdir gone; echo g > gone/g",
        ])
        let lower = UnionMounts.q(layout.lowers[0])
        let r = try layout.session(.fuse, """
            setpriv --reuid=65534 --regid=65534 --clear-groups cat secret 2>&1 | sed 's/.*: //'
            cat secret
            ls gone > /dev/null; cat y > /dev/null
            rm -rf \(lower)/gone \(lower)/y
            cat y 2>&1 | sed 's/.*: //'
            perl -e 'open(F, ">>", "y") or print "$!\n"'
            ls gone 2>&1 | sed 's/.*: //'
            touch gone/new 2>&1 | sed 's/.*: //'
            cat d/x; echo fine > d/new; cat d/new
            """)
        #expect(r.status == 0, "\(r.stderr) \(layout.daemonErrors)")
        #expect(r.stdout == """
            Permission denied
            secret
            No such file or directory
            No such file or directory
            No such file or directory
            No such file or directory
            x
            fine

            """, "got:\n\(r.stdout)")
        UnionMounts.expectNoLeftoverMount()
    }

    @Test func aFullUpperGivesENOSPCAndNoPartialCopy() throws {
        let layout = try UnionMounts.Layout("fuse-full", lowers: ["head -c 3000000 /dev/zero | tr '\\\\0' a > big; echo small > small"])
        let small = layout.tmp.mkdir("small")
        let q = UnionMounts.q
        let script = """
            mount -t tmpfs -o size=1m tmpfs \(q(small)) || exit 90
            mkdir \(q(small + "/u")) \(q(small + "/w"))
            \(UnionMounts.mountLines(.fuse, lowers: layout.lowers, upper: small + "/u", work: small + "/w", merged: layout.merged, scratch: layout.tmp.path))
            cd \(q(layout.merged)) || exit 91
            ( echo more >> big ) 2>&1 | sed 's/.*: //'
            ( head -c 2000000 /dev/zero > new ) 2>&1 | sed 's/.*: //'; rm -f new
            # Reported at write() or, with the kernel's write-back cache, at close(): never lost.
            perl -e 'open(F, ">", "new") or die; for (1..200) { print F ("z" x 10000) or do { print "write: $!\\n"; exit } } close(F) or print "close: $!\\n"' | sed 's/^[a-z]*: //'; rm -f new
            cat big | wc -c
            ls -A \(q(small + "/u")) \(q(small + "/w"))
            echo more >> small; cat small
            cd /
            umount \(q(layout.merged)) || exit 94
            wait "$DPID" || { echo "fuse-serve exited $?" >&2; exit 95; }
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", UnionMounts.sh, "-c", script])
        #expect(r.status == 0, "\(r.stderr) \(layout.daemonErrors)")
        #expect(r.stdout == """
            No space left on device
            No space left on device
            No space left on device
            3000000
            \(small)/u:

            \(small)/w:
            small
            more

            """, "got:\n\(r.stdout)")
        UnionMounts.expectNoLeftoverMount()
    }

    @Test func aKilledDaemonLeavesENOTCONNAndUmountStillCleansUp() throws {
        let layout = try UnionMounts.Layout("fuse-killed", lowers: ["echo a > a"])
        let q = UnionMounts.q
        let script = """
            \(UnionMounts.mountLines(.fuse, lowers: layout.lowers, upper: layout.upper, work: layout.work, merged: layout.merged, scratch: layout.tmp.path))
            cat \(q(layout.merged + "/a"))
            kill -9 "$DPID"; wait "$DPID" 2>/dev/null
            ls \(q(layout.merged)) 2>&1 | sed 's/.*: //'
            cat \(q(layout.merged + "/a")) 2>&1 | sed 's/.*: //'
            umount \(q(layout.merged)) && echo unmounted
            grep -c ' fuse.layerkit-union ' /proc/self/mountinfo
            true
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", UnionMounts.sh, "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "a\nTransport endpoint is not connected\nTransport endpoint is not connected\nunmounted\n0\n", "got:\n\(r.stdout)")
        UnionMounts.expectNoLeftoverMount()
    }

    @Test func fusermountUnmountEndsTheDaemonWithZero() throws {
        let layout = try UnionMounts.Layout("fuse-fusermount", lowers: ["echo a > a"])
        _ = try requireTool("fusermount3")
        let q = UnionMounts.q
        let script = """
            \(UnionMounts.mountLines(.fuse, lowers: layout.lowers, upper: layout.upper, work: layout.work, merged: layout.merged, scratch: layout.tmp.path))
            cat \(q(layout.merged + "/a"))
            fusermount3 -u \(q(layout.merged)) || exit 93
            wait "$DPID"; echo "exit $?"
            grep -c ' fuse.layerkit-union ' /proc/self/mountinfo
            true
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", UnionMounts.sh, "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "a\nexit 0\n0\n", "got:\n\(r.stdout)")
        UnionMounts.expectNoLeftoverMount()
    }

    @Test func sigtermUnmountsAndExitsZeroAndAStartFailureIsOneLine() throws {
        let layout = try UnionMounts.Layout("fuse-sigterm", lowers: ["echo a > a"])
        let q = UnionMounts.q
        let script = """
            \(UnionMounts.mountLines(.fuse, lowers: layout.lowers, upper: layout.upper, work: layout.work, merged: layout.merged, scratch: layout.tmp.path))
            kill -TERM "$DPID"; wait "$DPID"; echo "exit $?"
            grep -c ' fuse.layerkit-union ' /proc/self/mountinfo
            \(q(Layertool.path)) fuse-serve --lower /nonexistent --upper \(q(layout.upper)) --work \(q(layout.work)) --ready-fd 3 \(q(layout.merged)) 3>&1 2>/dev/null; echo "exit $?"
            true
            """
        let r = try run(try requireTool("unshare"), ["-m", "--propagation", "private", UnionMounts.sh, "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "exit 0\n0\nopen layer \"/nonexistent\": No such file or directory\nexit 1\n", "got:\n\(r.stdout)")
        UnionMounts.expectNoLeftoverMount()
    }
}
