import CLayerSys
import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Layers written by LayerDiffer from uppers the kernel's own overlayfs made (changes made through
// the merged mount): `diff --upper` of the upper, applied onto the lower tree, must give the merged
// tree, and so must the two-tree diff of LOWER against a copy of the merged tree. Uppers that use
// redirect_dir or metacopy cannot be read alone and must be refused.
//
// Trees are compared with TreeSnapshot (type, mode, owner, size, content, symlink target, mtime,
// xattrs, hardlink groups). Dir mtimes are not compared unless said (TreeSnapshot's default): a dir's
// mtime moves whenever a name in it changes, and neither overlayfs's copy-up nor `cp -a` is meant to
// keep it equal to anything.

/// Overlay mounts, the trees and changes of the scenarios, and the shared check.
private enum OverlayUpper {
    static let sh = which("sh") ?? "/bin/sh"

    /// The tools the mount and change scripts use.
    static let tools = ["unshare", "mount", "umount", "setfattr", "getfattr", "tar", "cp", "mkfifo", "dd", "stat", "touch"]

    // MARK: Overlay mounts

    /// Exit status of the script when `mount` fails (e.g. the kernel refuses an option).
    static let mountFailed: Int32 = 90

    /// Runs `changes` (sh, cwd = the merged dir) under `unshare -m --propagation private`: the
    /// overlay is mounted in a private mount namespace, so it cannot leak into the host's mount
    /// table and disappears with the namespace even if something goes wrong. After the changes the
    /// merged view is copied with `cp -a` into `newCopy` (when given), then unmounted.
    static func overlay(lower: String, upper: String, work: String, merged: String, newCopy: String?,
                        options: String, changes: String) throws -> ProcessResult {
        let script = """
            L=$1; U=$2; W=$3; M=$4; N=$5; OPTS=$6
            mount -t overlay overlay -o "lowerdir=$L,upperdir=$U,workdir=$W${OPTS:+,$OPTS}" "$M" || exit \(mountFailed)
            cd "$M" || { umount "$M"; exit 91; }
            ( \(changes)
            )
            status=$?
            cd / || exit 92
            if [ -n "$N" ]; then cp -a "$M/." "$N/" || { umount "$M"; exit 93; }; fi
            umount "$M" || exit 94
            exit $status
            """
        return try run(try requireTool("unshare"), ["-m", "--propagation", "private", sh, "-c", script, "sh",
                                            lower, upper, work, merged, newCopy ?? "", options])
    }

    /// After a failed mount with `options`: whether a mount with only the pinned options works on
    /// fresh dirs, i.e. whether it was the extra option the kernel refused.
    static func plainMountWorks() throws -> Bool {
        let tmp = TempDir("overlay-probe")
        let r = try overlay(lower: tmp.mkdir("l"), upper: tmp.mkdir("u"), work: tmp.mkdir("w"), merged: tmp.mkdir("m"),
                            newCopy: nil, options: mountOptions("trusted"), changes: "true")
        return r.status == 0
    }

    /// A single-quoted shell word for `./REL` (REL relative to the merged dir).
    static func q(_ rel: String) -> String {
        "'./" + rel.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }

    // MARK: Files

    /// Whether `path` is an overlayfs whiteout: a 0/0 char device.
    static func isOverlayWhiteout(_ path: String) -> Bool {
        guard let st = lstatOrNil(path) else { return false }
        return st.st_mode & 0o170000 == 0o020000 && st.st_rdev == 0
    }

    /// Creates a file with its metadata (the test fails when a step does).
    static func write(_ path: String, _ content: String, mode: mode_t = 0o644, uid: uid_t = 0, gid: gid_t = 0,
                      mtime: Int? = nil, xattrs: [(String, String)] = []) {
        #expect(FileManager.default.createFile(atPath: path, contents: Data(content.utf8)), "create \(path)")
        chown(path, uid, gid)
        chmod(path, mode)
        for (k, v) in xattrs { #expect(setxattr(path, k, v, v.utf8.count, 0) == 0, "setxattr \(k) on \(path)") }
        if let mtime { setMtime(path, mtime) }
    }

    /// Creates a dir with its metadata (the test fails when a step does).
    static func dir(_ path: String, mode: mode_t = 0o755, uid: uid_t = 0, gid: gid_t = 0, xattrs: [(String, String)] = []) {
        #expect(mkdir(path, 0o700) == 0, "mkdir \(path)")
        chown(path, uid, gid)
        chmod(path, mode)
        for (k, v) in xattrs { #expect(setxattr(path, k, v, v.utf8.count, 0) == 0, "setxattr \(k) on \(path)") }
    }

    // MARK: Comparing

    /// `LayerApplier` of `layer` onto a fresh `cp -a` copy of `base`; returns the copy.
    static func applyOntoCopy(of base: String, layer: String, result: DiffResult, at dest: String,
                              sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try copyTree(base, dest)
        let summary = try LayerApplier().apply(.path(layer), to: dest)
        #expect(summary.diffID == result.diffID, sourceLocation: sourceLocation)
        #expect(summary.blobDigest == result.descriptor.digest, sourceLocation: sourceLocation)
        #expect(summary.warnings.isEmpty, "apply warnings: \(summary.warnings)", sourceLocation: sourceLocation)
        return dest
    }

    /// `getfattr -R -P -h -d -m - --absolute-names` of a dir (every namespace, values dumped; symlinks
    /// not followed: the trees have dangling ones).
    static func getfattrDump(_ dir: String) throws -> String {
        let r = try run(try requireTool("getfattr"), ["-R", "-P", "-h", "-d", "-m", "-", "--absolute-names", dir])
        // getfattr exits 0 with no output for a tree without xattrs.
        #expect(r.status == 0, "getfattr: \(r.stderr)")
        return r.stdout
    }

    /// Names the tar lists (`tar -tf`).
    static func tarNames(_ layer: String) throws -> [String] {
        let r = try run(try requireTool("tar"), ["-tf", layer])
        #expect(r.status == 0, "tar -tf: \(r.stderr)")
        return r.stdout.split(separator: "\n").map(String.init)
    }

    // MARK: The shared check

    /// Mount options pinned rather than left to the kernel's defaults (module parameters, Kconfig):
    /// no redirect_dir, no metacopy, no index, so the upper can be read on its own. Renaming a
    /// lower dir then makes `mv` copy it (EXDEV), which the scenarios rely on. `user`: overlayfs
    /// keeps its state in `user.overlay.*` (`userxattr`, as in a user namespace), which wants
    /// redirect_dir=nofollow.
    static func mountOptions(_ namespace: String) -> String {
        namespace == "user" ? "userxattr,redirect_dir=nofollow,metacopy=off,index=off" : "redirect_dir=off,metacopy=off,index=off"
    }

    struct OverlayOutcome {
        var tmp: TempDir
        var lower: String
        var upper: String
        var newCopy: String
        var upperLayer: String
        var upperResult: DiffResult
        var fromUpper: TreeSnapshot
        var fromTrees: TreeSnapshot
        var merged: TreeSnapshot
        /// Lines `applied` the change script printed.
        var applied: Int
    }

    /// Builds LOWER (`prepare`, which returns the change script), makes the changes through the
    /// merged overlay, copies the merged view, then checks: diff --upper applied onto LOWER == merged
    /// copy == two-tree diff applied onto LOWER; the upper layer has no overlayfs xattrs.
    static func checkUpperAgainstTrees(_ label: String, namespace: String = "trusted", tolerateFailedChanges: Bool = false,
                                       sourceLocation: SourceLocation = #_sourceLocation,
                                       prepare: (String) throws -> String) throws -> OverlayOutcome {
        let tmp = TempDir("overlay-diff-\(label)")
        let lower = tmp.mkdir("lower")
        let changes = try prepare(lower)
        let upper = tmp.mkdir("upper")
        // The merged root takes the upper root's mode and owner, and an upper-dir diff has no root
        // entry (it cannot know what the lower root is like): make them the same as LOWER's, as a
        // container runtime's freshly created upper is.
        try copyOwnerAndMode(of: lower, to: upper)
        let work = tmp.mkdir("work")
        let mergedDir = tmp.mkdir("merged")
        let newCopy = tmp.mkdir("newcopy")
        let r = try overlay(lower: lower, upper: upper, work: work, merged: mergedDir, newCopy: newCopy,
                            options: mountOptions(namespace),
                            changes: (tolerateFailedChanges ? "" : "set -e\n") + changes)
        try #require(r.status == 0, "overlay script (\(label)) exited \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        if !tolerateFailedChanges {
            #expect(r.stderr.isEmpty, "overlay script (\(label)) stderr: \(r.stderr)", sourceLocation: sourceLocation)
        }

        // The upper has overlayfs's own xattrs (so the check on the layer below means something).
        let upperXattrs = try getfattrDump(upper)
        #expect(upperXattrs.contains("\(namespace).overlay."), "the kernel wrote no \(namespace).overlay.* xattr in the upper", sourceLocation: sourceLocation)

        // 1. diff --upper, applied onto a copy of LOWER.
        let upperLayer = tmp.sub("upper.tar")
        let upperResult = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(upper), toFile: upperLayer)
        #expect(upperResult.warnings.isEmpty, "diff --upper warnings: \(upperResult.warnings)", sourceLocation: sourceLocation)
        let fromUpperDir = try applyOntoCopy(of: lower, layer: upperLayer, result: upperResult, at: tmp.sub("from-upper"),
                                             sourceLocation: sourceLocation)

        // 2. diff LOWER NEWCOPY, applied onto another copy of LOWER.
        let treesLayer = tmp.sub("trees.tar.gz")
        let treesResult = try LayerDiffer(options: DiffOptions(compression: .gzip)).write(.trees(old: lower, new: newCopy), toFile: treesLayer)
        #expect(treesResult.warnings.isEmpty, "diff OLD NEW warnings: \(treesResult.warnings)", sourceLocation: sourceLocation)
        let fromTreesDir = try applyOntoCopy(of: lower, layer: treesLayer, result: treesResult, at: tmp.sub("from-trees"),
                                             sourceLocation: sourceLocation)

        let merged = TreeSnapshot(newCopy)
        let fromUpper = TreeSnapshot(fromUpperDir)
        let fromTrees = TreeSnapshot(fromTreesDir)
        #expect(!TreeSnapshot(lower).differences(from: merged).isEmpty, "the changes changed nothing", sourceLocation: sourceLocation)
        TreeSnapshot.expectSame(merged, "merged overlay (\(label))", fromUpper, "LOWER + diff --upper", sourceLocation: sourceLocation)
        TreeSnapshot.expectSame(merged, "merged overlay (\(label))", fromTrees, "LOWER + diff LOWER NEWCOPY", sourceLocation: sourceLocation)
        TreeSnapshot.expectSame(fromTrees, "LOWER + diff LOWER NEWCOPY", fromUpper, "LOWER + diff --upper", sourceLocation: sourceLocation)

        // 3. The upper layer carries no overlayfs state: neither in its pax headers...
        let bytes = try #require(FileManager.default.contents(atPath: upperLayer))
        for key in ["SCHILY.xattr.trusted.", "LIBARCHIVE.xattr.trusted.", "SCHILY.xattr.user.overlay."] {
            #expect(bytes.range(of: Data(key.utf8)) == nil, "the upper layer has a \(key)* record", sourceLocation: sourceLocation)
        }
        // ...nor once extracted by GNU tar with every xattr namespace asked for.
        let extracted = tmp.mkdir("extracted")
        let x = try run(try requireTool("tar"), ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", upperLayer, "-C", extracted])
        #expect(x.status == 0, "tar -x of the upper layer: \(x.stderr)", sourceLocation: sourceLocation)
        let dump = try getfattrDump(extracted)
        #expect(!dump.contains("trusted.overlay.") && !dump.contains("user.overlay."),
                Comment(rawValue: "overlayfs xattrs in the upper layer:\n" + dump), sourceLocation: sourceLocation)

        return OverlayOutcome(tmp: tmp, lower: lower, upper: upper, newCopy: newCopy, upperLayer: upperLayer,
                              upperResult: upperResult, fromUpper: fromUpper, fromTrees: fromTrees, merged: merged,
                              applied: r.stdout.split(separator: "\n").filter { $0 == "applied" }.count)
    }

    // MARK: The hand-made scenario

    /// A lower tree with every kind of entry the changes below touch.
    static func buildHandMadeLower(_ l: String) throws {
        dir(l + "/etc")
        write(l + "/etc/motd", "hello\n", mtime: 1_600_000_000)
        write(l + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        write(l + "/etc/samesize", "aaaa", mtime: 1_600_000_000)
        write(l + "/etc/hosts", "127.0.0.1 localhost\n", mtime: 1_600_000_001)
        write(l + "/etc/owned", "owned\n", mtime: 1_600_000_002)
        write(l + "/etc/xattr-file", "x\n", xattrs: [("user.x", "1")])
        write(l + "/etc/xattr-remove", "x\n", xattrs: [("user.gone", "1"), ("user.kept", "k")])
        write(l + "/etc/touched", "t\n", mtime: 1_600_000_003)
        write(l + "/etc/nsec", "n\n")
        setMtime(l + "/etc/nsec", 1_600_000_004, nsec: 123_456_789)
        dir(l + "/bin")
        write(l + "/bin/tool", "#!/bin/sh\n", mode: 0o755)
        #expect(link(l + "/bin/tool", l + "/bin/tool-hl") == 0)
        write(l + "/bin/pair-a", "pair\n")
        #expect(link(l + "/bin/pair-a", l + "/bin/pair-b") == 0)
        write(l + "/bin/trio-1", "trio\n")
        #expect(link(l + "/bin/trio-1", l + "/bin/trio-2") == 0)
        #expect(link(l + "/bin/trio-1", l + "/bin/trio-3") == 0)
        write(l + "/bin/su", "setuid\n", mode: 0o4755)
        #expect(symlink("tool", l + "/bin/sh") == 0)
        #expect(symlink("/etc/passwd", l + "/bin/abs") == 0)
        #expect(symlink("../nowhere", l + "/bin/dangling") == 0)
        setMtime(l + "/bin/sh", 1_500_000_000)
        dir(l + "/gone")
        write(l + "/gone/a", "a\n")
        dir(l + "/gone/sub")
        dir(l + "/gone/sub/deeper")
        write(l + "/gone/sub/deeper/c", "c\n", xattrs: [("user.deep", "1")])
        write(l + "/swapfile", "a file that becomes a dir\n")
        dir(l + "/swapdir")
        write(l + "/swapdir/child", "child\n")
        dir(l + "/opq")
        write(l + "/opq/old", "old\n")
        dir(l + "/opq/olddir")
        write(l + "/opq/olddir/x", "x\n")
        write(l + "/rename-me", "renamed\n", mtime: 1_600_000_005)
        write(l + "/moved-away", "moved\n", mtime: 1_600_000_006)
        dir(l + "/mvdir", mode: 0o750, xattrs: [("user.mv", "dir")])
        write(l + "/mvdir/m", "m\n", mtime: 1_600_000_007)
        dir(l + "/mvdir/sub")
        write(l + "/mvdir/sub/n", "n\n", uid: 33, gid: 33)
        #expect(mkfifo(l + "/fifo", 0o640) == 0)
        #expect(mkfifo(l + "/fifo-gone", 0o600) == 0)
        dir(l + "/dev")
        #expect(mknod(l + "/dev/null", 0o020666, makedevForTest(1, 3)) == 0)
        dir(l + "/home")
        dir(l + "/home/user", mode: 0o750, uid: 1000, gid: 1000)
        write(l + "/home/user/file", "mine\n", mode: 0o640, uid: 1000, gid: 1000, mtime: 1_000_000_000)
        dir(l + "/xdir", xattrs: [("user.d", "1")])
        write(l + "/xdir/f", "f\n")
        dir(l + "/sticky", mode: 0o1777)
        dir(l + "/empty")
        write(l + "/untouched", "never changed\n", mtime: 1_600_000_008)
    }

    /// Every kind of change, made through the merged dir (run with `set -e`: each must succeed).
    static let handMadeChanges = """
        printf 'new file\\n' > newfile
        mkdir -p newdir/sub && printf 'deep\\n' > newdir/sub/f
        printf 'more\\n' >> etc/motd
        printf 'bbbb' | dd of=etc/samesize bs=4 count=1 conv=notrunc 2>/dev/null
        touch -m -d @1600000000 etc/samesize
        chmod 0600 etc/hosts
        chown 1234:5678 etc/owned
        setfattr -n user.x -v changed etc/xattr-file
        setfattr -x user.gone etc/xattr-remove
        setfattr -n user.new -v on-dir xdir
        chmod 0700 xdir
        touch -m -d @1500000000 etc/touched
        chmod 0700 bin/tool
        rm bin/trio-2
        chown -h 7:7 bin/sh
        chown 5:5 bin/su
        rm etc/passwd
        rm -rf gone
        rm swapfile && mkdir swapfile && printf 'inside\\n' > swapfile/inside
        rm -rf swapdir && printf 'was a dir\\n' > swapdir
        rm -rf opq && mkdir opq && printf 'new\\n' > opq/new
        mv rename-me renamed
        mv moved-away newdir/moved-here
        mv mvdir mvdir-renamed
        mkfifo -m 0604 newfifo
        rm fifo-gone
        ln etc/motd etc/motd-hl
        ln newfile newfile-hl
        ln -s newfile newlink
        printf 'appended\\n' >> home/user/file
        """
}

extension OverlayUpper {
    /// `count` random changes of the names TreeGenerator made, as one sh script run in the merged dir;
    /// each one that takes effect prints `applied`.
    static func randomChanges(files: [String], dirs: [String], seed: Int, count: Int) -> String {
        var rng = SeededRandom(state: UInt64(seed) &* 6_700_417 &+ 11)
        let subdirs = dirs.filter { !$0.isEmpty }   // never the root itself
        // Whole-tree changes (delete, replace, rename) take dirs with at most one dir below them,
        // so that one early `rm -rf` of a big top-level dir does not leave nothing to change.
        let smallTrees = subdirs.filter { d in subdirs.filter { $0.hasPrefix(d + "/") }.count <= 1 }
        var lines = [String]()
        for i in 0..<count {
            let f = q(files.isEmpty ? "missing" : files[Int(rng.next() % UInt64(files.count))])
            let d = q(subdirs.isEmpty ? "missing" : subdirs[Int(rng.next() % UInt64(subdirs.count))])
            let tRaw = smallTrees.isEmpty ? "missing" : smallTrees[Int(rng.next() % UInt64(smallTrees.count))]
            let t = q(tRaw)
            let parent = dirs[Int(rng.next() % UInt64(dirs.count))]
            let fresh = q((parent.isEmpty ? "" : parent + "/") + "new-\(i)")
            let isFile = "[ -f \(f) ] && [ ! -L \(f) ]"
            let isDir = "[ -d \(d) ] && [ ! -L \(d) ]"
            let isTree = "[ -d \(t) ] && [ ! -L \(t) ]"
            let line: String
            switch rng.next() % 19 {
            case 0: line = "\(isFile) && printf 'appended %d' \(i) >> \(f)"                          // content
            case 1: line = "\(isFile) && chmod 0600 \(f)"                                            // mode
            case 2: line = "\(isDir) && chmod 0700 \(d)"
            case 3: line = "{ [ -e \(f) ] || [ -L \(f) ]; } && chown -h 42:43 \(f)"                  // owner (a symlink's own)
            case 4: line = "\(isFile) && setfattr -n user.changed -v v\(i) \(f)"                     // xattrs
            case 5: line = "\(isDir) && setfattr -n user.dir -v d\(i) \(d)"
            case 6: line = "rm -f \(f)"                                                              // delete a file
            case 7: line = "\(isTree) && rm -rf \(t)"                                                // delete a tree
            case 8: line = "\(isTree) && rm -rf \(t) && mkdir \(t) && printf in > \(t)/inside-\(i)"  // opaque dir
            case 9: line = "\(isFile) && rm -f \(f) && mkdir \(f) && printf in > \(f)/in"            // file -> dir
            case 10: line = "\(isTree) && rm -rf \(t) && printf 'was a dir' > \(t)"                  // dir -> file
            case 11: line = "{ [ -e \(f) ] || [ -L \(f) ]; } && mv \(f) \(fresh)"                    // rename
            case 12: line = "\(isTree) && mv \(t) \(q(tRaw + "-renamed-\(i)"))"                      // dir rename (copied: no redirect_dir)
            case 13: line = "mkfifo \(fresh)"
            case 14: line = "\(isFile) && ln \(f) \(fresh)"                                          // hardlink
            case 15:                                                                               // same size, same (whole-second) mtime, new bytes
                line = "\(isFile) && [ -s \(f) ] && m=$(stat -c %Y \(f)) && printf Z | dd of=\(f) bs=1 count=1 conv=notrunc 2>/dev/null && touch -h -m -d @$m \(f)"
            case 16: line = "ln -s target-\(i) \(fresh)"
            case 17: line = "\(isFile) && touch -h -m -d @1234567890 \(f)"                           // mtime only
            default: line = "mkdir -p \(fresh)/sub && printf new > \(fresh)/sub/file-\(i)"           // a new tree
            }
            lines.append("{ \(line); } && echo applied || :")
        }
        return lines.joined(separator: "\n")
    }
}

// MARK: - Kernel overlayfs uppers

@Suite(.serialized, .requires(.root(because: "overlay mounts"), .tools(OverlayUpper.tools), .kernelOverlay))
struct OverlayUpperDiffTests {
    /// `trusted`: overlayfs's state in trusted.overlay.* (a root mount); `user`: in user.overlay.*
    /// (`userxattr`).
    @Test(arguments: ["trusted", "user"])
    func handMadeChangesThroughTheKernelOverlay(_ namespace: String) throws {
        let o = try OverlayUpper.checkUpperAgainstTrees("handmade-\(namespace)", namespace: namespace) { lower in
            try OverlayUpper.buildHandMadeLower(lower)
            return OverlayUpper.handMadeChanges
        }
        let u = o.upper

        // The kernel made the shapes this test is about.
        for gone in ["gone", "etc/passwd", "bin/trio-2", "rename-me", "moved-away", "mvdir", "fifo-gone"] {
            #expect(OverlayUpper.isOverlayWhiteout(u + "/" + gone), "\(gone): a 0/0 char device whiteout in the upper")
        }
        for opaque in ["opq", "swapfile"] {
            #expect(xattr(u + "/" + opaque, "\(namespace).overlay.opaque") == Array("y".utf8), "\(opaque): an opaque dir in the upper")
        }
        #expect(xattr(u + "/mvdir-renamed", "\(namespace).overlay.redirect") == nil, "no redirect_dir: the renamed dir was copied")
        #expect(lstatOrNil(u + "/untouched") == nil && lstatOrNil(u + "/bin/pair-a") == nil, "untouched files stay below")

        // The upper layer says it in OCI terms.
        let names = Set(try OverlayUpper.tarNames(o.upperLayer))
        for name in [".wh.gone", "etc/.wh.passwd", "bin/.wh.trio-2", ".wh.rename-me", ".wh.mvdir", ".wh.fifo-gone",
                     "opq/.wh..wh..opq", "opq/new", "renamed", "newdir/moved-here", "mvdir-renamed/sub/n", "etc/motd-hl"] {
            #expect(names.contains(name), "the upper layer lists \(name): \(names.sorted())")
        }
        #expect(!names.contains { $0.hasPrefix("gone/") }, "nothing below a deleted dir")
        #expect(!names.contains("untouched") && !names.contains("bin/pair-a"))

        // And the result is what the changes say, so "equal" is not "equally wrong".
        let n = o.merged.nodes
        for gone in ["gone", "etc/passwd", "bin/trio-2", "rename-me", "moved-away", "mvdir", "fifo-gone", "opq/old", "opq/olddir", "swapdir/child"] {
            #expect(n[gone] == nil, "\(gone) is gone")
        }
        #expect(Set(n.keys.filter { $0.hasPrefix("opq/") }) == ["opq/new"])
        #expect(n["swapfile"]?.type == "dir" && n["swapfile/inside"]?.type == "file")
        #expect(n["swapdir"]?.type == "file")
        #expect(n["etc/samesize"]?.content == TreeSnapshot.sha256(ofFile: o.newCopy + "/etc/samesize")
                && n["etc/samesize"]?.content != TreeSnapshot.sha256(ofFile: o.lower + "/etc/samesize")
                && n["etc/samesize"]?.mtime == 1_600_000_000, "same size and mtime, new bytes")
        #expect(n["etc/hosts"]?.mode == 0o600)
        #expect(n["etc/owned"].map { [$0.uid, $0.gid] } == [1234, 5678])
        #expect(n["etc/xattr-file"]?.xattrs == ["user.x": Array("changed".utf8)])
        #expect(n["etc/xattr-remove"]?.xattrs == ["user.kept": Array("k".utf8)])
        #expect(n["xdir"]?.xattrs == ["user.d": Array("1".utf8), "user.new": Array("on-dir".utf8)] && n["xdir"]?.mode == 0o700)
        #expect(n["etc/touched"]?.mtime == 1_500_000_000)
        #expect(n["etc/nsec"] == o.fromUpper.nodes["etc/nsec"] && n["etc/nsec"] != nil)
        // Copy-up breaks a lower hardlink group (overlayfs without index=on): bin/tool changes alone.
        #expect(n["bin/tool"]?.mode == 0o700 && n["bin/tool-hl"]?.mode == 0o755)
        #expect(n["bin/pair-a"]?.linkGroup != nil && n["bin/pair-a"]?.linkGroup == n["bin/pair-b"]?.linkGroup)
        #expect(n["bin/trio-1"]?.linkGroup != nil && n["bin/trio-1"]?.linkGroup == n["bin/trio-3"]?.linkGroup)
        #expect(n["etc/motd"]?.linkGroup != nil && n["etc/motd"]?.linkGroup == n["etc/motd-hl"]?.linkGroup)
        #expect(n["newfile"]?.linkGroup != nil && n["newfile"]?.linkGroup == n["newfile-hl"]?.linkGroup)
        #expect(n["bin/sh"].map { [$0.uid, $0.gid] } == [7, 7] && n["bin/sh"]?.content == "tool")
        #expect(n["bin/su"].map { [$0.uid, $0.gid] } == [5, 5])
        #expect(n["newfifo"]?.type == "fifo" && n["newfifo"]?.mode == 0o604 && n["fifo"]?.type == "fifo")
        #expect(n["dev/null"]?.content == "1:3")
        #expect(n["mvdir-renamed"]?.mode == 0o750 && n["mvdir-renamed"]?.xattrs == ["user.mv": Array("dir".utf8)])
        #expect(n["mvdir-renamed/sub/n"].map { [$0.uid, $0.gid] } == [33, 33])
        #expect(n["newdir/moved-here"]?.mtime == 1_600_000_006)
        #expect(n["home/user/file"].map { [$0.uid, $0.gid, $0.mode] } == [1000, 1000, 0o640])

        // layertool's CLI writes the same layer as the library.
        let out = o.tmp.sub("cli-upper.tar")
        let r = try Layertool.run(["diff", "--upper", o.upper, "-o", out, "--json"])
        #expect(r.status == 0, "layertool diff --upper: \(r.stderr)")
        #expect(r.stdout.contains(o.upperResult.diffID.description), "CLI diffID: \(r.stdout)")
        #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: o.upperLayer))
    }

    /// Random lower trees (TreeGenerator: files, dirs, symlinks, hardlinks, fifos, devices, user.*
    /// xattrs, odd names, sub-second mtimes) and random changes made through the merged dir.
    /// A change may find its target already gone or changed by an earlier one: it then does nothing
    /// (`|| :`). Every change that works on a name's content or metadata first checks (`[ ! -L ]`)
    /// that it is not a symlink: the trees have absolute symlinks such as /etc/passwd.
    @Test(arguments: 0..<6)
    func randomChangesThroughTheKernelOverlay(_ seed: Int) throws {
        // Odd seeds mount with userxattr (overlayfs's state in user.overlay.*).
        let namespace = seed % 2 == 0 ? "trusted" : "user"
        let o = try OverlayUpper.checkUpperAgainstTrees("seed\(seed)", namespace: namespace, tolerateFailedChanges: true) { lower in
            var gen = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &* 104_729 &+ 3), root: lower)
            for _ in 0..<80 { gen.addEntry() }
            return OverlayUpper.randomChanges(files: gen.files, dirs: gen.dirs, seed: seed, count: 40)
        }
        // Most changes found their target (the script's quoting works on the odd names).
        #expect(o.applied >= 20, "only \(o.applied) of 40 changes took effect")
        #expect(o.upperResult.entryCount >= 10)
    }

    /// Only reads through the merged dir: the upper stays empty, the layer is an empty tar (the
    /// well-known empty layer, diffID sha256:5f70bf18...) and applies as a no-op. Gzip and zstd
    /// here; the uncompressed empty layer is applied by CompressionTests.anEmptyTarIsAnEmptyLayer
    /// and DiffUmociInteropTests.unchangedTreeGivesAnUncompressedEmptyLayerThatUnpacks.
    @Test func readOnlyUseGivesAnEmptyLayer() throws {
        let tmp = TempDir("overlay-readonly")
        let lower = tmp.mkdir("lower")
        var gen = TreeGenerator(rng: SeededRandom(state: 77), root: lower)
        for _ in 0..<40 { gen.addEntry() }
        let upper = tmp.mkdir("upper")
        try copyOwnerAndMode(of: lower, to: upper)
        let newCopy = tmp.mkdir("newcopy")
        let r = try OverlayUpper.overlay(lower: lower, upper: upper, work: tmp.mkdir("work"), merged: tmp.mkdir("merged"), newCopy: newCopy,
                                        options: OverlayUpper.mountOptions("trusted"),
                                        changes: "set -e\nls -laR . > /dev/null\nfind . -type f -exec cat {} + > /dev/null")
        try #require(r.status == 0, "overlay script exited \(r.status): \(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: upper).isEmpty, "reading copies nothing up")
        for compression in [Compression.gzip, .zstd] {
            let layer = tmp.sub("empty-\(compression)")
            let result = try LayerDiffer(options: DiffOptions(compression: compression)).write(.upper(upper), toFile: layer)
            #expect(result.entryCount == 0 && result.tarSize == 1024)
            #expect(result.diffID.description == emptyLayerDiffID)
            let applied = try OverlayUpper.applyOntoCopy(of: lower, layer: layer, result: result, at: tmp.sub("applied-\(compression)"))
            TreeSnapshot.expectSame(TreeSnapshot(newCopy), "merged overlay", TreeSnapshot(applied), "LOWER + empty \(compression) layer")
        }
    }

    @Test func upperWithARedirectIsRefused() throws {
        let tmp = TempDir("overlay-redirect")
        let lower = tmp.mkdir("lower")
        OverlayUpper.dir(lower + "/d")
        OverlayUpper.write(lower + "/d/f", "f\n")
        OverlayUpper.dir(lower + "/d/sub")
        OverlayUpper.write(lower + "/d/sub/g", "g\n")
        let upper = tmp.mkdir("upper")
        try copyOwnerAndMode(of: lower, to: upper)
        let r = try OverlayUpper.overlay(lower: lower, upper: upper, work: tmp.mkdir("work"), merged: tmp.mkdir("merged"),
                                        newCopy: nil, options: "redirect_dir=on,index=off", changes: "set -e\nmv d e")
        if r.status == OverlayUpper.mountFailed, try OverlayUpper.plainMountWorks() {
            // The kernel does not take redirect_dir=on (an old one, or one built without it): nothing to test.
            try Test.cancel("the kernel refused redirect_dir=on: \(r.stderr)")
        }
        try #require(r.status == 0, "overlay script exited \(r.status): \(r.stderr)")
        try #require(xattr(upper + "/e", "trusted.overlay.redirect") != nil,
                     "the renamed lower dir has a trusted.overlay.redirect xattr in the upper")

        let out = tmp.sub("layer.tar")
        #expect {
            _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(upper), toFile: out)
        } throws: { error in
            (error as? LayerError)?.description.contains("redirect") ?? false
        }
        #expect(!FileManager.default.fileExists(atPath: out), "no layer is left behind")
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path).allSatisfy { !$0.hasPrefix(".layer.tar") },
                "no temporary file is left behind")

        let cli = try Layertool.run(["diff", "--upper", upper, "-o", out])
        #expect(cli.status != 0 && cli.stderr.contains("redirect"), "layertool diff --upper: \(cli.status) \(cli.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func upperWithAMetacopyIsRefused() throws {
        let tmp = TempDir("overlay-metacopy")
        let lower = tmp.mkdir("lower")
        OverlayUpper.write(lower + "/f", String(repeating: "data ", count: 1000))
        let upper = tmp.mkdir("upper")
        try copyOwnerAndMode(of: lower, to: upper)
        let r = try OverlayUpper.overlay(lower: lower, upper: upper, work: tmp.mkdir("work"), merged: tmp.mkdir("merged"),
                                        newCopy: nil, options: "metacopy=on,index=off", changes: "set -e\nchmod 0600 f")
        if r.status == OverlayUpper.mountFailed, try OverlayUpper.plainMountWorks() {
            // The kernel does not take metacopy=on (an old one, or one built without it): nothing to test.
            try Test.cancel("the kernel refused metacopy=on: \(r.stderr)")
        }
        try #require(r.status == 0, "overlay script exited \(r.status): \(r.stderr)")
        try #require(xattr(upper + "/f", "trusted.overlay.metacopy") != nil,
                     "the chmod made a metadata-only copy-up (trusted.overlay.metacopy) in the upper")
        // Its bytes are below (the upper file is a hole of the right size): a layer made of the
        // upper alone would hold zeros.
        #expect(FileManager.default.contents(atPath: upper + "/f") != FileManager.default.contents(atPath: lower + "/f"),
                "a metacopy upper file has no data of its own")

        let out = tmp.sub("layer.tar")
        #expect {
            _ = try LayerDiffer(options: DiffOptions(compression: .none)).write(.upper(upper), toFile: out)
        } throws: { error in
            (error as? LayerError)?.description.contains("metacopy") ?? false
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        let cli = try Layertool.run(["diff", "--upper", upper, "-o", out])
        #expect(cli.status != 0 && cli.stderr.contains("metacopy"), "layertool diff --upper: \(cli.status) \(cli.stderr)")
    }
}
