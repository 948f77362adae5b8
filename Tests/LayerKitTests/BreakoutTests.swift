import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Every breakout class of EDGE-CASES.md ("Breakouts", items 1–15) plus the `breakout-*.tar`
/// fixtures.
///
/// Each case runs in a fresh arena:
///
///     <base>/victim/      a sentinel tree OUTSIDE the target (passwd, hello, etc/passwd, etc/shadow, dirs, a symlink)
///     <base>/dest-evil/   a sibling whose name shares the target's prefix
///     <base>/dest/        the target
///     <base>/layers/      the layer files
///
/// and checks that (a) the sentinels are byte-for-byte what they were (TreeSnapshot, dir mtimes
/// included), that nothing new appeared beside the target, and that nothing carrying this run's
/// unique id appeared in the host's `/`, `/etc`, `/tmp`, `/run`, ... and that the host's
/// `/etc/passwd` kept its inode, link count, mode, times and size; (b) either the apply failed with
/// a `LayerError` naming the entry and the reason, or it succeeded and the effect is inside the
/// target where the catalogue says.
///
/// "Outside" link targets come in two forms: the sentinel's absolute path (`<base>/victim/etc`,
/// where an escape would be seen by the sentinel snapshot), and the host's literal `/etc` (where
/// only names unique to this run are used, so that even a broken implementation could not change a
/// real host file). A path `/X` re-rooted in the target is `<dest>/X`.
@Suite(.serialized) struct BreakoutTests {

    /// Where links in a case point when the catalogue says `/etc`.
    enum Outside: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// `<base>/victim/etc`: the sentinel's own absolute path.
        case victim
        /// The literal `/etc` of the host, with file names unique to the run.
        case host
        var testDescription: String { rawValue }
    }

    static let formats: [ApplyOptions.Format] = geteuid() == 0 ? [.plain, .overlay(.trusted)] : [.plain]

    // MARK: - Arena

    final class Arena {
        let tmp: TempDir
        /// The arena's real path (symlinks resolved, so relative climbs from dest reach the victim).
        let base: String
        let dest: String
        let victim: String
        let evil: String
        let layersDir: String
        let outside: Outside
        let format: ApplyOptions.Format
        /// Unique per arena; every name that could land on the host carries it.
        let id: String

        private var sentinel: [String: TreeSnapshot]? = nil
        private var hostPasswd: HostStat? = nil
        private var layerCount = 0

        static let snapshotOptions: TreeSnapshot.Options = {
            var o = TreeSnapshot.Options()
            o.dirMtimes = true
            return o
        }()

        init(_ outside: Outside = .victim, format: ApplyOptions.Format = .plain) {
            tmp = TempDir("breakout")
            base = resolvedPath(tmp.path)!
            dest = base + "/dest"
            victim = base + "/victim"
            evil = base + "/dest-evil"
            layersDir = base + "/layers"
            self.outside = outside
            self.format = format
            id = "lk" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()

            Self.makeDir(dest)
            Self.makeDir(layersDir)
            Self.makeDir(victim)
            Self.makeFile(victim + "/passwd", "victim passwd\n")
            Self.makeFile(victim + "/hello", "hello\n")
            Self.makeDir(victim + "/etc")
            Self.makeFile(victim + "/etc/passwd", "root:x:0:0:victim:/root:/bin/sh\n")
            Self.makeFile(victim + "/etc/group", "root:x:0:\n")
            Self.makeFile(victim + "/etc/shadow", "root:*:19000:0:99999:7:::\n", mode: 0o600)
            Self.makeFile(victim + "/etc/whitedout", "must survive\n")
            Self.makeDir(victim + "/etc/sub")
            Self.makeFile(victim + "/etc/sub/file", "sub\n")
            Self.makeDir(victim + "/dir", mode: 0o750)
            Self.makeFile(victim + "/dir/file", "dir file\n")
            Self.makeDir(victim + "/dir/sub")
            Self.makeFile(victim + "/dir/sub/deep", "deep\n")
            Self.makeSymlink(victim + "/link", "etc/passwd")
            Self.makeDir(evil)
            Self.makeFile(evil + "/secret", "evil secret\n")
        }

        // Paths of the case.

        /// What the catalogue calls `/etc`.
        var etc: String { outside == .victim ? victim + "/etc" : "/etc" }
        /// `etc` as an archive name (relative).
        var etcRel: String { String(etc.dropFirst()) }
        /// Where `/etc` is once re-rooted in the target.
        var etcIn: String { dest + etc }
        /// The `passwd` file of `etc`: the sentinel's real one, or a name that does not exist on the host.
        var passwd: String { outside == .victim ? "passwd" : name("passwd") }
        /// A climb from anywhere in the target to the host's `/`.
        static let up = String(repeating: "../", count: 24)

        /// A name unique to this arena.
        func name(_ stem: String) -> String { "\(stem)-\(id)" }
        /// A path inside the target.
        func inRoot(_ rel: String) -> String { dest + "/" + rel }

        /// `D etc; F etc/passwd=inside` (with `etc` the case's form).
        func etcEntries() -> [TarEntry] {
            [.dir(etcRel), .file("\(etcRel)/\(passwd)", "inside\n")]
        }

        /// The same, made directly (pre-state).
        func makeEtcInRoot() {
            Self.makeDir(etcIn)
            Self.makeFile(etcIn + "/" + passwd, "inside\n")
        }

        // Applying.

        /// Snapshots the sentinels and the host state now (done by the first apply if not before).
        func armSentinel() {
            guard sentinel == nil else { return }
            sentinel = [victim: TreeSnapshot(victim, options: Self.snapshotOptions),
                        evil: TreeSnapshot(evil, options: Self.snapshotOptions)]
            hostPasswd = HostStat("/etc/passwd")
        }

        @discardableResult
        func apply(_ entries: [TarEntry]) -> Result<LayerSummary, LayerError> {
            layerCount += 1
            let path = TarBuilder.write(entries, to: layersDir + "/layer\(layerCount).tar")
            return applyFile(path)
        }

        func applyFile(_ path: String) -> Result<LayerSummary, LayerError> {
            armSentinel()
            do {
                return .success(try LayerApplier(options: ApplyOptions(format: format)).apply(.path(path), to: dest))
            } catch {
                return .failure(error)
            }
        }

        func write(_ entries: [TarEntry]) -> String {
            layerCount += 1
            return TarBuilder.write(entries, to: layersDir + "/layer\(layerCount).tar")
        }

        func unpack(_ path: String) -> Result<[LayerSummary], LayerError> {
            armSentinel()
            do {
                return .success(try Unpacker(options: ApplyOptions(format: format)).unpack([LayerInput(source: .path(path))], to: dest))
            } catch {
                return .failure(error)
            }
        }

        /// How the sentinel trees differ from their snapshots.
        func sentinelChanges() -> [String] {
            guard let sentinel else { return ["not armed"] }
            return sentinel.sorted(by: { $0.key < $1.key }).flatMap { path, before in
                before.differences(from: TreeSnapshot(path, options: Self.snapshotOptions)).map { "\(path): \($0)" }
            }
        }

        /// Nothing outside the target was created, changed or deleted.
        func expectConfined(sourceLocation: SourceLocation = #_sourceLocation) {
            guard sentinel != nil else {
                Issue.record("nothing was applied", sourceLocation: sourceLocation)
                return
            }
            let changes = sentinelChanges()
            #expect(changes.isEmpty, "a sentinel changed:\n\(changes.joined(separator: "\n"))", sourceLocation: sourceLocation)
            let beside = Set((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
            #expect(beside == ["dest", "victim", "dest-evil", "layers"], "new entries beside the target: \(beside.sorted())",
                    sourceLocation: sourceLocation)
            for dir in ["/", "/etc", "/tmp", "/run", "/var/run", "/usr/bin", "/dev"] {
                let hits = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.contains(id) }
                #expect(hits.isEmpty, "created on the host in \(dir): \(hits)", sourceLocation: sourceLocation)
                for hit in hits { try? FileManager.default.removeItem(atPath: dir + "/" + hit) }
            }
            #expect(HostStat("/etc/passwd") == hostPasswd, "the host's /etc/passwd was touched", sourceLocation: sourceLocation)
        }

        // Making pre-state and sentinels.

        static func makeDir(_ path: String, mode: mode_t = 0o755) {
            try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            chmod(path, mode)
        }

        static func makeFile(_ path: String, _ content: String, mode: mode_t = 0o644) {
            precondition(FileManager.default.createFile(atPath: path, contents: Data(content.utf8)), "cannot create \(path)")
            chmod(path, mode)
        }

        static func makeSymlink(_ path: String, _ target: String) {
            precondition(Glibc.symlink(target, path) == 0, "cannot create symlink \(path)")
        }

        static func makeHardlink(_ path: String, to existing: String) {
            precondition(link(existing, path) == 0, "cannot link \(path)")
        }
    }

    /// What identifies a host file and would change if it were linked, written, chmodded or replaced.
    struct HostStat: Equatable {
        var exists = false
        var dev: UInt64 = 0, ino: UInt64 = 0, nlink: UInt64 = 0
        var mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        var size: Int64 = 0
        var mtime: [Int] = [], ctime: [Int] = []
        init(_ path: String) {
            var st = stat()
            guard lstat(path, &st) == 0 else { return }
            exists = true
            dev = UInt64(st.st_dev); ino = UInt64(st.st_ino); nlink = UInt64(st.st_nlink)
            mode = st.st_mode; uid = st.st_uid; gid = st.st_gid; size = Int64(st.st_size)
            mtime = [st.st_mtim.tv_sec, st.st_mtim.tv_nsec]
            ctime = [st.st_ctim.tv_sec, st.st_ctim.tv_nsec]
        }
    }

    // MARK: - Checks

    static func fileType(_ path: String) -> mode_t? { lstatOrNil(path).map { $0.st_mode & 0o170000 } }

    static func sameInode(_ a: String, _ b: String) -> Bool {
        guard let x = lstatOrNil(a), let y = lstatOrNil(b) else { return false }
        return x.st_ino == y.st_ino && x.st_dev == y.st_dev
    }

    static func linkTarget(_ path: String) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: path)
    }

    static let regular: mode_t = 0o100000, directory: mode_t = 0o040000, symlink: mode_t = 0o120000, charDevice: mode_t = 0o020000

    func expectApplied<T>(_ result: Result<T, LayerError>, _ what: String = "",
                          sourceLocation: SourceLocation = #_sourceLocation) {
        if case .failure(let error) = result {
            Issue.record("expected the layer to apply\(what.isEmpty ? "" : " (\(what))"), got: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// The layer was refused with `kind`, at `entry`, for a reason containing `reason`, and the
    /// message names both.
    func expectRefused<T>(_ result: Result<T, LayerError>, _ kind: LayerError.Kind, entry: String, reason: String,
                          sourceLocation: SourceLocation = #_sourceLocation) {
        switch result {
        case .success:
            Issue.record("expected the layer to be refused (\(kind)) at entry \"\(entry)\", but it applied", sourceLocation: sourceLocation)
        case .failure(let error):
            #expect(error.kind == kind, "kind: \(error)", sourceLocation: sourceLocation)
            #expect(error.entry == entry, "entry: \(error)", sourceLocation: sourceLocation)
            #expect(error.reason.contains(reason), "reason: \(error)", sourceLocation: sourceLocation)
            #expect(error.description.contains("entry \"\(entry)\"") && error.description.contains(reason),
                    "description: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// A whiteout left in the target in overlay format.
    func expectOverlayWhiteout(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let st = lstatOrNil(path)
        #expect(st.map { $0.st_mode & 0o170000 } == Self.charDevice && st?.st_rdev == 0,
                "\(path) should be a 0/0 char device", sourceLocation: sourceLocation)
    }

    // MARK: - The guard itself

    @Test("the sentinel snapshot notices a created, removed, rewritten, chmodded or linked file")
    func sentinelNoticesChanges() {
        let changes: [(String, (Arena) -> Void)] = [
            ("create", { a in Arena.makeFile(a.victim + "/etc/unbroken", "") }),
            ("remove", { a in unlink(a.victim + "/etc/whitedout") }),
            ("rewrite same size", { a in Arena.makeFile(a.victim + "/hello", "HELLO\n") }),
            ("chmod", { a in chmod(a.victim + "/etc", 0o700) }),
            ("hardlink", { a in Arena.makeHardlink(a.dest + "/grab", to: a.victim + "/etc/passwd") }),
            ("sibling", { a in Arena.makeFile(a.evil + "/secret", "changed!!!!\n") }),
        ]
        for (label, change) in changes {
            let a = Arena()
            a.armSentinel()
            #expect(a.sentinelChanges().isEmpty, "\(label): clean before")
            change(a)
            #expect(!a.sentinelChanges().isEmpty, "\(label) went unnoticed")
        }
    }

    // MARK: - 1. Symlink chains resolve inside the root

    @Test("1. symlink chains are resolved inside the root", arguments: Outside.allCases, formats)
    func symlinkChainsResolveInsideTheRoot(_ outside: Outside, _ format: ApplyOptions.Format) {
        // D etc; S localetc->/etc; F localetc/unbroken
        do {
            let a = Arena(outside, format: format)
            let unbroken = a.name("unbroken")
            let r = a.apply(a.etcEntries() + [.symlink("localetc", a.etc), .file("localetc/\(unbroken)", "unbroken")])
            expectApplied(r, "absolute link")
            #expect(contents(a.etcIn + "/" + unbroken) == "unbroken")
            #expect(Self.linkTarget(a.inRoot("localetc")) == a.etc)
            a.expectConfined()
        }
        // ... with /dummy/../etc
        do {
            let a = Arena(outside, format: format)
            let unbroken = a.name("unbroken")
            let r = a.apply(a.etcEntries() + [.dir("dummy"), .symlink("localetc", "/dummy/.." + a.etc),
                                              .file("localetc/\(unbroken)", "unbroken")])
            expectApplied(r, "/dummy/../etc")
            #expect(contents(a.etcIn + "/" + unbroken) == "unbroken")
            #expect(Self.fileType(a.inRoot("dummy/\(unbroken)")) == nil)
            a.expectConfined()
        }
        // ... climbing out relatively: ../../../../(...)/etc
        do {
            let a = Arena(outside, format: format)
            let unbroken = a.name("unbroken")
            let r = a.apply(a.etcEntries() + [.symlink("localetc", Arena.up + a.etcRel), .file("localetc/\(unbroken)", "unbroken")])
            expectApplied(r, "relative climb")
            #expect(contents(a.etcIn + "/" + unbroken) == "unbroken")
            a.expectConfined()
        }
        // two hops: S dummy/etc->/etc; S localetc->/dummy/etc (or ./dummy/etc), written through both
        for second in ["/dummy/etc", "./dummy/etc"] {
            let a = Arena(outside, format: format)
            let viaLocal = a.name("unbroken"), viaDummy = a.name("unbroken2")
            let r = a.apply(a.etcEntries() + [
                .dir("dummy"), .symlink("dummy/etc", a.etc), .symlink("localetc", second),
                .file("localetc/\(viaLocal)", "unbroken"), .file("dummy/etc/\(viaDummy)", "unbroken2"),
            ])
            expectApplied(r, "two hops via \(second)")
            #expect(contents(a.etcIn + "/" + viaLocal) == "unbroken")
            #expect(contents(a.etcIn + "/" + viaDummy) == "unbroken2")
            #expect(Self.fileType(a.inRoot("dummy/etc")) == Self.symlink)
            a.expectConfined()
        }
    }

    // MARK: - 2. An empty file through an outside-pointing link

    @Test("2. an empty file written through an outside link empties the in-root file", arguments: Outside.allCases, formats)
    func emptyFileThroughALinkEmptiesTheInRootFile(_ outside: Outside, _ format: ApplyOptions.Format) {
        let a = Arena(outside, format: format)
        let r = a.apply(a.etcEntries() + [.symlink("localetc", a.etc), .file("localetc/\(a.passwd)", "")])
        expectApplied(r)
        #expect(Self.fileType(a.etcIn + "/" + a.passwd) == Self.regular)
        #expect(lstatOrNil(a.etcIn + "/" + a.passwd)?.st_size == 0, "the in-root file is emptied")
        a.expectConfined()  // <base>/victim/etc/passwd keeps its content
    }

    // MARK: - 3. Hardlinks through symlinks

    @Test("3. hardlinks through symlinks link inside the root", arguments: Outside.allCases)
    func hardlinksThroughSymlinks(_ outside: Outside) {
        // S breakouts/d1->../../etc (a climb), ../downandout/../../etc; H breakouts/mypasswd=>breakouts/d1/passwd
        for downAndOut in [false, true] {
            let a = Arena(outside)
            let target = (downAndOut ? "../downandout/" : "") + Arena.up + a.etcRel
            let r = a.apply(a.etcEntries() + (downAndOut ? [.dir("downandout")] : []) + [
                .dir("breakouts"), .symlink("breakouts/d1", target),
                .hardlink("breakouts/mypasswd", "breakouts/d1/\(a.passwd)"),
            ])
            expectApplied(r, target)
            #expect(Self.sameInode(a.inRoot("breakouts/mypasswd"), a.etcIn + "/" + a.passwd), "\(target)")
            a.expectConfined()
        }
        // S localetc->/etc, ../../../../../../../etc, upandout/../../../etc; H localpasswd=>localetc/passwd
        for form in ["absolute", "relative climb", "up and out"] {
            let a = Arena(outside)
            let target = form == "absolute" ? a.etc : (form == "up and out" ? "upandout/" : "") + Arena.up + a.etcRel
            let r = a.apply(a.etcEntries() + (form == "up and out" ? [.dir("upandout")] : []) + [
                .symlink("localetc", target), .hardlink("localpasswd", "localetc/\(a.passwd)"),
            ])
            expectApplied(r, form)
            #expect(Self.sameInode(a.inRoot("localpasswd"), a.etcIn + "/" + a.passwd), "\(form)")
            a.expectConfined()
        }
        // The same without `upandout`: the kernel cannot walk the dangling component, so the link
        // target is missing and the layer is refused (the lexical `upandout/..` is not taken).
        do {
            let a = Arena(outside)
            let r = a.apply(a.etcEntries() + [.symlink("localetc", "upandout/" + Arena.up + a.etcRel),
                                              .hardlink("localpasswd", "localetc/\(a.passwd)")])
            expectRefused(r, .invalidEntry, entry: "localpasswd", reason: "not found")
            #expect(Self.fileType(a.inRoot("localpasswd")) == nil)
            a.expectConfined()
        }
        // Direct: H x=>../../../../../etc/passwd is refused (a relative target that climbs out).
        do {
            let a = Arena(outside)
            let target = "../../../../../" + a.etcRel + "/" + a.passwd
            let r = a.apply(a.etcEntries() + [.hardlink("localpasswd", target)])
            expectRefused(r, .pathEscapes, entry: "localpasswd", reason: "hardlink target \"\(target)\" escapes the target")
            #expect(Self.fileType(a.inRoot("localpasswd")) == nil)
            a.expectConfined()
        }
        // Direct: H x=>/etc/passwd is re-rooted.
        do {
            let a = Arena(outside)
            let r = a.apply(a.etcEntries() + [.hardlink("localpasswd", a.etc + "/" + a.passwd)])
            expectApplied(r, "absolute hardlink target")
            #expect(Self.sameInode(a.inRoot("localpasswd"), a.etcIn + "/" + a.passwd))
            #expect(lstatOrNil(a.etcIn + "/" + a.passwd)?.st_nlink == 2)
            a.expectConfined()
        }
    }

    @Test("3. hardlinks through ../../victim/etc (the sentinel's relative path) stay inside")
    func hardlinksThroughRelativeLinksToTheSentinel() {
        // From <dest>/breakouts, ../../victim/etc is the real sentinel; inside the root it is /victim/etc.
        for (target, extra) in [("../../victim/etc", [TarEntry]()), ("../downandout/../../victim/etc", [.dir("downandout")])] {
            let a = Arena()
            let r = a.apply([.dir("victim/etc"), .file("victim/etc/passwd", "inside\n")] + extra + [
                .dir("breakouts"), .symlink("breakouts/d1", target), .hardlink("breakouts/mypasswd", "breakouts/d1/passwd"),
            ])
            expectApplied(r, target)
            #expect(Self.sameInode(a.inRoot("breakouts/mypasswd"), a.inRoot("victim/etc/passwd")), "\(target)")
            a.expectConfined()
        }
        let a = Arena()
        let r = a.apply([.dir("victim/etc"), .file("victim/etc/passwd", "inside\n"), .hardlink("x", "../victim/etc/passwd")])
        expectRefused(r, .pathEscapes, entry: "x", reason: "escapes the target")
        a.expectConfined()
    }

    // MARK: - 4. Odd names

    @Test("4. odd symlink names never redirect a later hardlink", arguments: Outside.allCases)
    func oddNames(_ outside: Outside) {
        // S ..->/etc/ : a relative name climbing out, refused.
        do {
            let a = Arena(outside)
            let r = a.apply(a.etcEntries() + [.symlink("..", a.etc + "/"), .hardlink("localpasswd", a.etc + "/" + a.passwd)])
            expectRefused(r, .pathEscapes, entry: "..", reason: "path escapes the target")
            #expect(Self.fileType(a.inRoot("localpasswd")) == nil)
            #expect(lstatOrNil(a.etcIn + "/" + a.passwd)?.st_nlink == 1)
            a.expectConfined()
        }
        // S ""->/etc/ : the empty name is the root; the root can only be a directory.
        do {
            let a = Arena(outside)
            let r = a.apply(a.etcEntries() + [.symlink("", a.etc + "/"), .hardlink("localpasswd", a.etc + "/" + a.passwd)])
            expectRefused(r, .invalidEntry, entry: "", reason: "the root of the target can only be a directory")
            #expect(Self.fileType(a.dest) == Self.directory)
            #expect(Self.fileType(a.inRoot("localpasswd")) == nil)
            a.expectConfined()
        }
        // S localetc/sub/..->/etc/ is the link `localetc`; the hardlink through it lands in the in-root etc.
        do {
            let a = Arena(outside)
            let r = a.apply(a.etcEntries() + [.symlink("localetc/sub/..", a.etc + "/"),
                                              .hardlink("localetc/localpasswd", a.etc + "/" + a.passwd)])
            expectApplied(r, "localetc/sub/..")
            #expect(Self.linkTarget(a.inRoot("localetc")) == a.etc + "/")
            #expect(Self.sameInode(a.etcIn + "/localpasswd", a.etcIn + "/" + a.passwd))
            a.expectConfined()
        }
        // D localetc/ (slash-ended); H localetc/localpasswd=>/etc/passwd
        do {
            let a = Arena(outside)
            let r = a.apply(a.etcEntries() + [.dir("localetc/"), .hardlink("localetc/localpasswd", a.etc + "/" + a.passwd)])
            expectApplied(r, "localetc/")
            #expect(Self.sameInode(a.inRoot("localetc/localpasswd"), a.etcIn + "/" + a.passwd))
            a.expectConfined()
        }
    }

    // MARK: - 5. Pre-state

    @Test("5. a link over a pre-existing dir, a dir over a pre-existing link, a pre-existing hardlink", arguments: Outside.allCases)
    func preState(_ outside: Outside) {
        // pre D localetc; S localetc->/etc (absolute, then relative); H localetc/localpasswd=>/etc/passwd
        for relative in [false, true] {
            let a = Arena(outside)
            Arena.makeDir(a.inRoot("localetc"))
            let target = relative ? Arena.up + a.etcRel : a.etc
            let r = a.apply(a.etcEntries() + [.symlink("localetc", target),
                                              .hardlink("localetc/localpasswd", a.etc + "/" + a.passwd)])
            expectApplied(r, relative ? "relative" : "absolute")
            #expect(Self.fileType(a.inRoot("localetc")) == Self.symlink)
            #expect(Self.sameInode(a.etcIn + "/localpasswd", a.etcIn + "/" + a.passwd))
            a.expectConfined()
        }
        // pre S localetc->/etc; D localetc/ (0700) replaces the link, no chmod through it.
        // (Host form: the link names a dir unique to the run, so a chmod through it could not reach a real one.)
        do {
            let a = Arena(outside)
            let linkDir = outside == .victim ? a.etc : "/etc/" + a.name("dir")
            Arena.makeDir(a.dest + linkDir, mode: 0o755)
            Arena.makeFile(a.dest + linkDir + "/passwd", "inside\n")
            Arena.makeSymlink(a.inRoot("localetc"), linkDir)
            let r = a.apply([.dir("localetc", mode: 0o700), .hardlink("localetc/localpasswd", linkDir + "/passwd")])
            expectApplied(r)
            #expect(Self.fileType(a.inRoot("localetc")) == Self.directory)
            #expect(lstatOrNil(a.inRoot("localetc")).map { $0.st_mode & 0o7777 } == 0o700)
            #expect(lstatOrNil(a.dest + linkDir).map { $0.st_mode & 0o7777 } == 0o755, "no chmod through the replaced link")
            #expect(Self.sameInode(a.inRoot("localetc/localpasswd"), a.dest + linkDir + "/passwd"))
            a.expectConfined()
        }
        // pre S localetc->etc, H localetc/localpasswd=>etc/passwd; D localetc/; F localetc/localpasswd=different
        do {
            let a = Arena(outside)
            a.makeEtcInRoot()
            Arena.makeSymlink(a.inRoot("localetc"), a.etc)
            Arena.makeHardlink(a.etcIn + "/localpasswd", to: a.etcIn + "/" + a.passwd)
            let r = a.apply([.dir("localetc"), .file("localetc/localpasswd", "different")])
            expectApplied(r)
            #expect(Self.fileType(a.inRoot("localetc")) == Self.directory)
            #expect(contents(a.inRoot("localetc/localpasswd")) == "different")
            #expect(!Self.sameInode(a.inRoot("localetc/localpasswd"), a.etcIn + "/" + a.passwd))
            #expect(contents(a.etcIn + "/" + a.passwd) == "inside\n")
            #expect(Self.sameInode(a.etcIn + "/localpasswd", a.etcIn + "/" + a.passwd), "the old link is left alone")
            a.expectConfined()
        }
    }

    @Test("5. a pre-existing name hardlinked to a file outside is replaced, never written through")
    func preExistingHardlinkToAnOutsideFile() {
        let a = Arena()
        Arena.makeDir(a.inRoot("etc"))
        Arena.makeSymlink(a.inRoot("localetc"), "etc")
        a.armSentinel()  // before linking: the link is gone again once its name is replaced
        Arena.makeHardlink(a.inRoot("etc/passwd"), to: a.victim + "/etc/passwd")
        Arena.makeHardlink(a.inRoot("etc/localpasswd"), to: a.victim + "/passwd")
        let r = a.apply([.file("etc/passwd", "different"), .dir("localetc"), .file("localetc/localpasswd", "other"),
                         .file("etc/localpasswd", "")])
        expectApplied(r)
        #expect(contents(a.inRoot("etc/passwd")) == "different")
        #expect(!Self.sameInode(a.inRoot("etc/passwd"), a.victim + "/etc/passwd"))
        #expect(contents(a.inRoot("localetc/localpasswd")) == "other")
        #expect(lstatOrNil(a.inRoot("etc/localpasswd"))?.st_size == 0)
        a.expectConfined()
    }

    // MARK: - 6. Names

    @Test("6. names climbing out of the target are refused",
          arguments: ["../victim/dotdot", "..", "../pwned", "../../pwned", "./../../x", "a/../../victim/passwd", "../victim/etc/passwd"])
    func escapingNamesAreRefused(_ name: String) {
        for entry in [TarEntry.file(name, "pwned"), .symlink(name, "/"), .fifo(name)] {
            let a = Arena()
            let r = a.apply([.file("first", "1"), entry, .file("after", "2")])
            expectRefused(r, .pathEscapes, entry: name, reason: "path escapes the target")
            #expect(contents(a.inRoot("first")) == "1")
            #expect(Self.fileType(a.inRoot("after")) == nil)
            a.expectConfined()
        }
        // A hardlink named so, whatever it points at.
        let a = Arena()
        let r = a.apply([.file("first", "1"), .hardlink(name, "first")])
        expectRefused(r, .pathEscapes, entry: name, reason: "path escapes the target")
        a.expectConfined()
    }

    @Test("6. absolute names climbing above / are re-rooted")
    func slashDotdotIsReRooted() {
        let a = Arena(.host)
        let etcFile = a.name("x")
        let r = a.apply([.file("/../victim/slash-dotdot", "in"), .file("/../../etc/\(etcFile)", "in"),
                         .symlink("/../victim/link", "/etc/passwd")])
        expectApplied(r)
        #expect(contents(a.inRoot("victim/slash-dotdot")) == "in")
        #expect(contents(a.inRoot("etc/\(etcFile)")) == "in")
        #expect(Self.linkTarget(a.inRoot("victim/link")) == "/etc/passwd")
        a.expectConfined()
    }

    @Test("6. a sibling of the target sharing its name prefix is outside")
    func siblingWithASharedPrefix() {
        // H grab=>../dest-evil/secret: a relative climb, refused.
        do {
            let a = Arena()
            let r = a.apply([.hardlink("grab", "../dest-evil/secret")])
            expectRefused(r, .pathEscapes, entry: "grab", reason: "hardlink target \"../dest-evil/secret\" escapes the target")
            #expect(Self.fileType(a.inRoot("grab")) == nil)
            a.expectConfined()
        }
        // H grab=><base>/dest-evil/secret: re-rooted, and nothing is there.
        do {
            let a = Arena()
            let r = a.apply([.hardlink("grab", a.evil + "/secret")])
            expectRefused(r, .invalidEntry, entry: "grab", reason: "not found")
            #expect(Self.fileType(a.inRoot("grab")) == nil)
            a.expectConfined()
        }
        // S grab-><base>/dest-evil, S grab2->../dest-evil; files written through them land inside.
        do {
            let a = Arena()
            let r = a.apply([.symlink("grab", a.evil), .file("grab/secret", "pwned"),
                             .symlink("grab2", "../dest-evil"), .file("grab2/secret", "pwned2"),
                             .hardlink("grab3", "grab2/secret")])
            expectApplied(r)
            #expect(contents(a.dest + a.evil + "/secret") == "pwned")
            #expect(contents(a.inRoot("dest-evil/secret")) == "pwned2")
            #expect(Self.sameInode(a.inRoot("grab3"), a.inRoot("dest-evil/secret")))
            a.expectConfined()
        }
    }

    @Test("6. hardlinks to ../victim/hello and /../victim/hello")
    func hardlinksToTheSentinel() {
        do {
            let a = Arena()
            let r = a.apply([.hardlink("dotdot", "../victim/hello")])
            expectRefused(r, .pathEscapes, entry: "dotdot", reason: "escapes the target")
            a.expectConfined()
        }
        do {
            // Re-rooted to <dest>/victim/hello, which does not exist.
            let a = Arena()
            let r = a.apply([.hardlink("slash-dotdot", "/../victim/hello")])
            expectRefused(r, .invalidEntry, entry: "slash-dotdot", reason: "not found")
            a.expectConfined()
        }
        do {
            let a = Arena()
            let r = a.apply([.file("victim/hello", "inside"), .hardlink("slash-dotdot", "/../victim/hello")])
            expectApplied(r)
            #expect(Self.sameInode(a.inRoot("slash-dotdot"), a.inRoot("victim/hello")))
            a.expectConfined()
        }
    }

    // MARK: - 7. Loopholes

    @Test("7. a hardlink loophole to ../victim is refused before anything uses it")
    func hardlinkLoopholes() {
        let followUps: [TarEntry] = [.file("loophole/file", "pwned"), .symlink("s", "loophole/hello"),
                                     .hardlink("h", "loophole/hello"), .file("loophole", "pwned")]
        for next in followUps {
            let a = Arena()
            let r = a.apply([.hardlink("loophole", "../victim"), next])
            expectRefused(r, .pathEscapes, entry: "loophole", reason: "hardlink target \"../victim\" escapes the target")
            #expect(Self.fileType(a.inRoot("loophole")) == nil)
            #expect(Self.fileType(a.inRoot(next.path)) == nil)
            a.expectConfined()
        }
    }

    @Test("7. a symlink loophole to ../victim is confined to <dest>/victim")
    func symlinkLoopholes() {
        // F loophole/file: lands in <dest>/victim/file.
        do {
            let a = Arena()
            let r = a.apply([.symlink("loophole", "../victim"), .file("loophole/file", "pwned")])
            expectApplied(r)
            #expect(contents(a.inRoot("victim/file")) == "pwned")
            a.expectConfined()
        }
        // S s->loophole/hello: just a link, nothing followed.
        do {
            let a = Arena()
            let r = a.apply([.symlink("loophole", "../victim"), .symlink("s", "loophole/hello")])
            expectApplied(r)
            #expect(Self.linkTarget(a.inRoot("s")) == "loophole/hello")
            a.expectConfined()
        }
        // H h=>loophole/hello: resolved inside, where there is no hello.
        do {
            let a = Arena()
            let r = a.apply([.symlink("loophole", "../victim"), .hardlink("h", "loophole/hello")])
            expectRefused(r, .invalidEntry, entry: "h", reason: "hardlink target \"loophole/hello\" not found")
            #expect(Self.fileType(a.inRoot("h")) == nil)
            a.expectConfined()
        }
        // ... and where there is one, it is the in-root one that is linked.
        do {
            let a = Arena()
            let r = a.apply([.file("victim/hello", "inside"), .symlink("loophole", "../victim"), .hardlink("h", "loophole/hello")])
            expectApplied(r)
            #expect(Self.sameInode(a.inRoot("h"), a.inRoot("victim/hello")))
            a.expectConfined()
        }
        // F loophole: replaces the link, leaves ../victim alone.
        do {
            let a = Arena()
            let r = a.apply([.symlink("loophole", "../victim"), .file("loophole", "pwned")])
            expectApplied(r)
            #expect(Self.fileType(a.inRoot("loophole")) == Self.regular)
            #expect(contents(a.inRoot("loophole")) == "pwned")
            a.expectConfined()
        }
        // S dir/loophole->../../victim; F dir/loophole/newdir/newfile
        do {
            let a = Arena()
            let r = a.apply([.symlink("dir/loophole", "../../victim"), .file("dir/loophole/newdir/newfile", "pwned")])
            expectApplied(r)
            #expect(contents(a.inRoot("victim/newdir/newfile")) == "pwned")
            a.expectConfined()
        }
    }

    // MARK: - 8. Two hops

    static let twoHops: [TarEntry] = [.dir("inner"), .symlink("inner/go_up", ".."), .symlink("inner/go_up/escape", "../victim"),
                                      .file("inner/go_up/escape/newfile", "pwned")]

    @Test("8. two hops (inner/go_up->.., escape->../victim) never reach the sentinel")
    func twoHopsNeverEscape() {
        // The confinement guarantee on its own; where the file lands is the next test.
        let a = Arena()
        _ = a.apply(Self.twoHops)
        #expect(Self.linkTarget(a.inRoot("escape")) == "../victim", "the link was made in the dir inner/go_up resolves to")
        a.expectConfined()
    }

    @Test("8. two hops are confined: newfile lands in <dest>/victim")
    func twoHopsAreConfined() {
        let a = Arena()
        let r = a.apply(Self.twoHops)
        expectApplied(r)
        #expect(contents(a.inRoot("victim/newfile")) == "pwned")
        #expect(Self.fileType(a.inRoot("inner/victim")) == nil, "no dir the archive never named")
        a.expectConfined()
    }

    // MARK: - 9. Hardlink to a symlink

    @Test("9. a hardlink to a symlink links the symlink itself; its metadata never reaches the link's target",
          arguments: Outside.allCases)
    func hardlinkToASymlink(_ outside: Outside) {
        let a = Arena(outside)
        let target = a.etc + "/passwd"  // the host's real /etc/passwd in the host form: checked by HostStat
        let host = HostStat("/etc/passwd")
        var l2 = TarEntry.hardlink("l2", "l")
        var fromAbsolute = TarEntry.hardlink("localpasswd", "/passwdlink")
        if outside == .victim {
            // CVE-2021-32760: a mode (and owner, time) on the link entry must not be applied through it.
            l2.mode = 0o777; l2.uid = 4242; l2.gid = 4242; l2.mtime = 1
            fromAbsolute.mode = 0o6777
        } else {
            // On the host's own file, even a broken implementation must not change anything: same values.
            l2.mode = UInt32(host.mode & 0o7777); l2.uid = Int64(host.uid); l2.gid = Int64(host.gid)
            fromAbsolute.mode = l2.mode; fromAbsolute.uid = l2.uid; fromAbsolute.gid = l2.gid
        }
        var l = TarEntry.symlink("l", target)
        if outside == .victim {
            l.uid = 4242; l.gid = 4242; l.mtime = 1
            l.xattrs = [("security.layerkit-test", Array("x".utf8)), ("user.layerkit-test", Array("x".utf8))]
        }
        let r = a.apply([l, l2, .symlink("passwdlink", Arena.up + String(target.dropFirst())), fromAbsolute])
        expectApplied(r)
        #expect(Self.fileType(a.inRoot("l2")) == Self.symlink)
        #expect(Self.sameInode(a.inRoot("l2"), a.inRoot("l")))
        #expect(Self.linkTarget(a.inRoot("l2")) == target)
        #expect(Self.fileType(a.inRoot("localpasswd")) == Self.symlink)
        #expect(Self.sameInode(a.inRoot("localpasswd"), a.inRoot("passwdlink")))
        a.expectConfined()
    }

    @Test("9. writing over a hardlinked symlink replaces the name, not the link's target")
    func writingOverAHardlinkedSymlink() {
        let a = Arena()
        let r = a.apply([.symlink("l", a.victim + "/etc/passwd"), .hardlink("l2", "l"), .file("l2", "pwned"),
                         .dir("l", mode: 0o700)])
        expectApplied(r)
        #expect(contents(a.inRoot("l2")) == "pwned")
        #expect(Self.fileType(a.inRoot("l")) == Self.directory)
        a.expectConfined()
    }

    // MARK: - 10. Symlink override

    @Test("10. a symlink replacing a dir (foo->/) redirects later entries inside the root", arguments: Outside.allCases)
    func symlinkOverride(_ outside: Outside) {
        let a = Arena(outside)
        // Host form: foo->/ and foo/tmp/X; victim form: foo-><base>/victim and foo/etc/passwd.
        let top = outside == .victim ? a.victim : "/"
        let sub = outside == .victim ? "etc/passwd" : "tmp/" + a.name("X")
        let subDir = String(sub.split(separator: "/")[0])
        let r = a.apply([.dir("foo"), .dir("foo/\(subDir)"), .file("foo/\(sub)", "123"), .symlink("foo", top),
                         .file("foo/\(sub)", "345")])
        expectApplied(r)
        #expect(Self.linkTarget(a.inRoot("foo")) == top)
        let landed = (outside == .victim ? a.dest + a.victim : a.dest) + "/" + sub
        #expect(contents(landed) == "345")
        a.expectConfined()
    }

    // MARK: - 11. Absolute targets are re-rooted

    @Test("11. an absolute hardlink target is re-rooted (usr/bin/perlthanks=>/usr/bin/perlbug)")
    func absoluteHardlinkTarget() {
        let a = Arena(.host)
        let bug = a.name("perlbug"), thanks = a.name("perlthanks")
        let r = a.apply([.dir("usr"), .dir("usr/bin"), .file("usr/bin/\(bug)", "#!/usr/bin/perl\n", mode: 0o755),
                         .hardlink("usr/bin/\(thanks)", "/usr/bin/\(bug)")])
        expectApplied(r)
        #expect(Self.sameInode(a.inRoot("usr/bin/\(thanks)"), a.inRoot("usr/bin/\(bug)")))
        a.expectConfined()
    }

    @Test("11. pre var/run->/run: var/run/a/b/file lands in <dest>/run/a/b/file", arguments: Outside.allCases, formats)
    func preExistingAbsoluteLinkIsFollowedInside(_ outside: Outside, _ format: ApplyOptions.Format) {
        let a = Arena(outside, format: format)
        let run = outside == .victim ? a.victim + "/run" : "/run"
        Arena.makeDir(a.inRoot("var"))
        Arena.makeSymlink(a.inRoot("var/run"), run)
        let dir = a.name("a")
        let r = a.apply([.file("var/run/\(dir)/b/file", "file")])
        expectApplied(r)
        #expect(contents(a.dest + run + "/\(dir)/b/file") == "file")
        #expect(Self.fileType(a.inRoot("var/run")) == Self.symlink)
        a.expectConfined()
    }

    @Test("11. pre D target, S escape->.., S absolute->/target: escape/absolute/file stays inside", arguments: Outside.allCases)
    func escapeThenAbsolute(_ outside: Outside) {
        let a = Arena(outside)
        let target = outside == .victim ? a.victim : "/" + a.name("target")
        Arena.makeDir(a.dest + target)
        Arena.makeSymlink(a.inRoot("escape"), "..")
        Arena.makeSymlink(a.inRoot("absolute"), target)
        let r = a.apply([.file("escape/absolute/file", "in"), .file("escape/victim/file", "in2")])
        expectApplied(r)
        #expect(contents(a.dest + target + "/file") == "in")
        #expect(contents(a.inRoot("victim/file")) == "in2")
        a.expectConfined()
    }

    // MARK: - 12. Whiteouts

    @Test("12. invalid whiteout names are refused", arguments: [".wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh..."], formats)
    func invalidWhiteouts(_ name: String, _ format: ApplyOptions.Format) {
        let a = Arena(format: format)
        Arena.makeDir(a.inRoot("etc"))
        Arena.makeFile(a.inRoot("etc/passwd"), "inside\n")
        let r = a.apply([.dir("etc"), .file(name)])
        expectRefused(r, .invalidEntry, entry: name, reason: "invalid whiteout name")
        #expect(contents(a.inRoot("etc/passwd")) == "inside\n")
        a.expectConfined()
    }

    @Test("12. .wh.localetc (a link to /etc) removes only the link", arguments: Outside.allCases, formats)
    func whiteoutOfALinkRemovesTheLink(_ outside: Outside, _ format: ApplyOptions.Format) {
        let a = Arena(outside, format: format)
        a.makeEtcInRoot()
        Arena.makeSymlink(a.inRoot("localetc"), a.etc)
        let r = a.apply([.whiteout("", "localetc")])
        expectApplied(r)
        if format == .plain {
            #expect(Self.fileType(a.inRoot("localetc")) == nil)
        } else {
            expectOverlayWhiteout(a.inRoot("localetc"))
        }
        #expect(contents(a.etcIn + "/" + a.passwd) == "inside\n")
        a.expectConfined()
    }

    @Test("12. whiteouts and opaque markers under a link to /etc act inside the root", arguments: Outside.allCases, formats)
    func whiteoutsThroughALink(_ outside: Outside, _ format: ApplyOptions.Format) {
        // localetc/.wh.NAME for a file and a dir
        do {
            let a = Arena(outside, format: format)
            a.makeEtcInRoot()
            let dir = outside == .victim ? "sub" : a.name("sub")
            Arena.makeDir(a.etcIn + "/" + dir)
            Arena.makeFile(a.etcIn + "/" + dir + "/file", "sub\n")
            Arena.makeSymlink(a.inRoot("localetc"), a.etc)
            let r = a.apply([.whiteout("localetc", a.passwd), .whiteout("localetc", dir)])
            expectApplied(r)
            if format == .plain {
                #expect(Self.fileType(a.etcIn + "/" + a.passwd) == nil)
                #expect(Self.fileType(a.etcIn + "/" + dir) == nil)
            } else {
                expectOverlayWhiteout(a.etcIn + "/" + a.passwd)
                expectOverlayWhiteout(a.etcIn + "/" + dir)
            }
            #expect(Self.fileType(a.inRoot("localetc")) == Self.symlink)
            a.expectConfined()
        }
        // The link climbing out relatively.
        do {
            let a = Arena(outside, format: format)
            a.makeEtcInRoot()
            Arena.makeSymlink(a.inRoot("localetc"), Arena.up + a.etcRel)
            let r = a.apply([.whiteout("localetc", a.passwd)])
            expectApplied(r)
            if format == .plain {
                #expect(Self.fileType(a.etcIn + "/" + a.passwd) == nil)
            } else {
                expectOverlayWhiteout(a.etcIn + "/" + a.passwd)
            }
            a.expectConfined()
        }
        // localetc/.wh..wh..opq
        do {
            let a = Arena(outside, format: format)
            a.makeEtcInRoot()
            Arena.makeSymlink(a.inRoot("localetc"), a.etc)
            let r = a.apply([.opaque("localetc")])
            expectApplied(r)
            if format == .plain {
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: a.etcIn)) ?? ["?"]).isEmpty)
            } else {
                #expect(TreeSnapshot.xattrs(a.etcIn, ignoring: [])["trusted.overlay.opaque"] == Array("y".utf8))
                #expect(contents(a.etcIn + "/" + a.passwd) == "inside\n")
            }
            #expect(Self.fileType(a.inRoot("localetc")) == Self.symlink)
            a.expectConfined()  // includes: no trusted.overlay.opaque on <base>/victim/etc
        }
    }

    @Test("12. whiteouts named to climb out", arguments: formats)
    func whiteoutsClimbingOut(_ format: ApplyOptions.Format) {
        for name in ["../.wh.victim", "../victim/.wh.passwd", "../victim/.wh..wh..opq", "a/../../.wh.victim"] {
            let a = Arena(format: format)
            let r = a.apply([.file(name)])
            expectRefused(r, .pathEscapes, entry: name, reason: "path escapes the target")
            a.expectConfined()
        }
        // /../.wh.victim is re-rooted: it removes <dest>/victim only.
        let a = Arena(format: format)
        Arena.makeDir(a.inRoot("victim"))
        Arena.makeFile(a.inRoot("victim/passwd"), "inside\n")
        let r = a.apply([.file("/../.wh.victim")])
        expectApplied(r)
        if format == .plain {
            #expect(Self.fileType(a.inRoot("victim")) == nil)
        } else {
            expectOverlayWhiteout(a.inRoot("victim"))
        }
        a.expectConfined()
    }

    @Test("12. .wh.etc/somefile is an ordinary file; dne/../.wh.etc is .wh.etc", arguments: formats)
    func whiteoutLookalikes(_ format: ApplyOptions.Format) {
        do {
            let a = Arena(format: format)
            Arena.makeDir(a.inRoot("etc"))
            Arena.makeFile(a.inRoot("etc/passwd"), "all users")
            Arena.makeSymlink(a.inRoot("localetc"), a.victim + "/etc")
            let r = a.apply([.file(".wh.etc/somefile", "non-empty")])
            expectApplied(r)
            #expect(contents(a.inRoot(".wh.etc/somefile")) == "non-empty")
            #expect(contents(a.inRoot("etc/passwd")) == "all users")
            a.expectConfined()
        }
        do {
            let a = Arena(format: format)
            Arena.makeDir(a.inRoot("etc"))
            Arena.makeFile(a.inRoot("etc/passwd"), "all users")
            Arena.makeSymlink(a.inRoot("localetc"), "/dne")
            let r = a.apply([.file("dne/../.wh.etc")])
            expectApplied(r)
            if format == .plain {
                #expect(Self.fileType(a.inRoot("etc")) == nil)
            } else {
                expectOverlayWhiteout(a.inRoot("etc"))
            }
            #expect(Self.fileType(a.inRoot("dne")) == nil)
            a.expectConfined()
        }
    }

    @Test("12. a whiteout under a dangling link is a no-op (plain format)")
    func whiteoutUnderADanglingLink() {
        let a = Arena()
        Arena.makeDir(a.inRoot("etc"))
        Arena.makeFile(a.inRoot("etc/passwd"), "all users")
        Arena.makeSymlink(a.inRoot("localetc"), "/dne")
        let r = a.apply([.whiteout("localetc", "etc")])
        expectApplied(r)
        #expect(contents(a.inRoot("etc/passwd")) == "all users")
        #expect(Self.fileType(a.inRoot("dne")) == nil)
        a.expectConfined()
    }

    // MARK: - 13. Non-directory parents

    @Test("13. a non-directory parent fails with ENOTDIR (containerd's choice)", arguments: formats)
    func nonDirectoryParent(_ format: ApplyOptions.Format) {
        do {
            let a = Arena(format: format)
            let r = a.apply([.file("nondir", "f"), .file("nondir/foo/bar/baz", "x")])
            expectRefused(r, .system(.notDirectory), entry: "nondir/foo/bar/baz", reason: "not a directory")
            #expect(contents(a.inRoot("nondir")) == "f")
            a.expectConfined()
        }
        // A hardlink under a file.
        do {
            let a = Arena(format: format)
            let r = a.apply([.file("nondir", "f"), .hardlink("nondir/x", "nondir")])
            expectRefused(r, .system(.notDirectory), entry: "nondir/x", reason: "not a directory")
            a.expectConfined()
        }
    }

    @Test("13. a link to a file used as a parent fails with ENOTDIR inside the root", arguments: Outside.allCases)
    func linkToAFileAsParent(_ outside: Outside) {
        let a = Arena(outside)
        a.makeEtcInRoot()
        Arena.makeSymlink(a.inRoot("nondir"), a.etc + "/" + a.passwd)
        let r = a.apply([.file("nondir/foo/bar/baz", "x")])
        expectRefused(r, .system(.notDirectory), entry: "nondir/foo/bar/baz", reason: "not a directory")
        #expect(contents(a.etcIn + "/" + a.passwd) == "inside\n")
        a.expectConfined()
    }

    // MARK: - 14. The root as a non-directory

    static let rootEntries: [(String, TarEntry)] = [
        (".", .file(".", "x")), (".", .symlink(".", "/")), ("./", .symlink("./", "/")), ("/", .symlink("/", "/")),
        ("", .symlink("", "/")), ("a/..", .symlink("a/..", "/")), (".", .fifo(".")), ("/.", .file("/.", "x")),
        (".", .hardlink(".", "x")),
    ]

    @Test("14. a non-directory entry for the root is refused", arguments: 0..<rootEntries.count)
    func rootAsANonDirectory(_ index: Int) {
        let (display, entry) = Self.rootEntries[index]
        let a = Arena()
        var e = entry
        if e.kind == .symlink { e.linkTarget = a.victim }
        let before = lstatOrNil(a.dest)
        let r = a.apply([.file("x", "x"), e])
        expectRefused(r, .invalidEntry, entry: display, reason: "the root of the target can only be a directory")
        #expect(Self.fileType(a.dest) == Self.directory)
        #expect(lstatOrNil(a.dest)?.st_ino == before?.st_ino)
        #expect(contents(a.inRoot("x")) == "x")
        a.expectConfined()
    }

    // MARK: - 15. Device numbers beyond 32 bits

    static let hugeDevices: [TarEntry] = [
        .char("dev/mem", (1 << 32) | 1, 1),  // would truncate to 1:1 (/dev/mem)
        .char("dev/kmem", 1, (1 << 32) | 2),  // would truncate to 1:2
        TarEntry(kind: .block, path: "dev/sda", mode: 0o660, devMajor: (1 << 40) | 8, devMinor: 0),
    ]

    @Test("15. device numbers beyond 32 bits are refused", arguments: 0..<hugeDevices.count, formats)
    func hugeDeviceNumbers(_ index: Int, _ format: ApplyOptions.Format) {
        let entry = Self.hugeDevices[index]
        let a = Arena(format: format)
        let r = a.apply([entry])
        expectRefused(r, .invalidEntry, entry: entry.path, reason: "out of range")
        #expect(Self.fileType(a.inRoot(entry.path)) == nil)
        a.expectConfined()
    }

    // MARK: - Fixtures

    static let fixtureLayers = fixturesDir + "/layers"

    @Test("fixture breakout-dotdot.tar (../escaped) is refused", arguments: formats)
    func fixtureDotdot(_ format: ApplyOptions.Format) {
        let a = Arena(format: format)
        let r = a.applyFile(Self.fixtureLayers + "/breakout-dotdot.tar")
        expectRefused(r, .pathEscapes, entry: "../escaped", reason: "path escapes the target")
        #expect(Self.fileType(a.inRoot("escaped")) == nil)
        a.expectConfined()  // includes: no <base>/escaped
    }

    @Test("fixture breakout-hardlink.tar (passwd=>../../../../etc/passwd) is refused", arguments: formats)
    func fixtureHardlink(_ format: ApplyOptions.Format) {
        let a = Arena(format: format)
        let r = a.applyFile(Self.fixtureLayers + "/breakout-hardlink.tar")
        expectRefused(r, .pathEscapes, entry: "passwd", reason: "hardlink target \"../../../../etc/passwd\" escapes the target")
        #expect(Self.fileType(a.inRoot("passwd")) == nil)
        a.expectConfined()
    }

    @Test("fixtures breakout-symlink(-relative).tar land in <dest>/tmp/pwned",
          arguments: ["breakout-symlink.tar", "breakout-symlink-relative.tar"], formats)
    func fixtureSymlink(_ file: String, _ format: ApplyOptions.Format) {
        let hostPwned = HostStat("/tmp/pwned")
        let a = Arena(format: format)
        let r = a.applyFile(Self.fixtureLayers + "/" + file)
        expectApplied(r)
        #expect(contents(a.inRoot("tmp/pwned")) == "pwned\n")
        #expect(Self.fileType(a.inRoot("escape")) == Self.symlink)
        #expect(HostStat("/tmp/pwned") == hostPwned, "the host's /tmp/pwned must never appear or change")
        a.expectConfined()
    }

    @Test("fixtures through Unpacker: refused layers leave the destination as it was")
    func fixturesThroughUnpacker() throws {
        for file in ["breakout-dotdot.tar", "breakout-hardlink.tar"] {
            // Empty destination: built in a staging dir, which is removed.
            let a = Arena()
            let r = a.unpack(Self.fixtureLayers + "/" + file)
            if case .success = r { Issue.record("\(file) was unpacked") }
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: a.dest)) ?? ["?"]).isEmpty)
            a.expectConfined()  // includes: no staging dir left beside dest
        }
        for file in ["breakout-symlink.tar", "breakout-symlink-relative.tar"] {
            let hostPwned = HostStat("/tmp/pwned")
            let a = Arena()
            let r = a.unpack(Self.fixtureLayers + "/" + file)
            expectApplied(r, file)
            #expect(contents(a.inRoot("tmp/pwned")) == "pwned\n")
            #expect(HostStat("/tmp/pwned") == hostPwned)
            a.expectConfined()
        }
    }

    // MARK: - All or nothing (Unpacker)

    @Test("hostile layers unpacked onto a populated destination are refused before anything is written")
    func unpackerRefusesBeforeWriting() {
        let hostile: [(String, (Arena) -> [TarEntry])] = [
            ("../escaped", { _ in [.file("../escaped", "x")] }),
            ("grab", { _ in [.hardlink("grab", "../victim/passwd")] }),
            ("loophole", { _ in [.hardlink("loophole", "../victim"), .file("loophole/file")] }),
            (".wh..", { _ in [.file(".wh..")] }),
            (".", { a in [.symlink(".", a.victim)] }),
            ("dev/mem", { _ in [.char("dev/mem", (1 << 32) | 1, 1)] }),
        ]
        for (entryName, make) in hostile {
            let a = Arena()
            Arena.makeFile(a.inRoot("keep"), "keep")
            let layer = a.write([.file("first", "written before the bad entry")] + make(a))
            let before = TreeSnapshot(a.dest, options: Arena.snapshotOptions)
            let r = a.unpack(layer)
            switch r {
            case .success: Issue.record("\(entryName): unpacked")
            case .failure(let e): #expect(e.entry == entryName, "\(e)")
            }
            let changes = before.differences(from: TreeSnapshot(a.dest, options: Arena.snapshotOptions))
            #expect(changes.isEmpty, "\(entryName): the destination changed: \(changes)")
            a.expectConfined()
        }
    }
}
