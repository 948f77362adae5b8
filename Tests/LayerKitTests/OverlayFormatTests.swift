import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Layers written in overlayfs's own format (for store layers): whiteouts are char devices 0/0,
/// opaque dirs carry `trusted.overlay.opaque=y` (or the `user.` form).
@Suite(.requires(.root(because: "char devices and trusted.* xattrs")))
struct OverlayFormatTests {
    @Test func whiteoutsAndOpaqueDirsUseOverlayMarkers() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([[
            .dir("etc"), .whiteout("etc", "motd"), .opaque("etc"), .file("etc/new", "n"),
            .whiteout("", "gone"),
        ]], onto: dest, options: ApplyOptions(format: .overlay(.trusted)))
        let motd = try #require(lstatOrNil(dest + "/etc/motd"))
        #expect(motd.st_mode & 0o170000 == 0o020000 && motd.st_rdev == 0)
        #expect(motd.st_mtim.tv_sec == 1_700_000_000, "the whiteout device has the marker's mtime")
        #expect(lstatOrNil(dest + "/gone").map { $0.st_mode & 0o170000 } == 0o020000)
        #expect(TreeSnapshot.xattrs(dest + "/etc", ignoring: [])["trusted.overlay.opaque"] == Array("y".utf8))
        #expect(lstatOrNil(dest + "/etc/.wh..wh..opq") == nil)
        #expect(contents(dest + "/etc/new") == "n")
    }

    @Test func userNamespaceForm() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([[.dir("d"), .opaque("d")]], onto: dest, options: ApplyOptions(format: .overlay(.user)))
        let x = TreeSnapshot.xattrs(dest + "/d", ignoring: [])
        #expect(x["user.overlay.opaque"] == Array("y".utf8))
        #expect(x["trusted.overlay.opaque"] == nil)
    }

    @Test func dirRecreatedOverAWhiteoutIsOpaque() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([[.whiteout("", "d"), .dir("d"), .file("d/x")]], onto: dest,
                        options: ApplyOptions(format: .overlay(.trusted)))
        #expect(lstatOrNil(dest + "/d").map { $0.st_mode & 0o170000 } == 0o040000)
        #expect(TreeSnapshot.xattrs(dest + "/d", ignoring: [])["trusted.overlay.opaque"] == Array("y".utf8))
    }

    @Test func whiteoutOfThisLayersDirMakesItOpaque() throws {
        let tmp = TempDir()
        let dest = tmp.mkdir("dest")
        try applyLayers([[.dir("d"), .file("d/x"), .whiteout("", "d")]], onto: dest,
                        options: ApplyOptions(format: .overlay(.trusted)))
        #expect(contents(dest + "/d/x") == "")
        #expect(TreeSnapshot.xattrs(dest + "/d", ignoring: [])["trusted.overlay.opaque"] == Array("y".utf8))
    }

    @Test func hardlinkToALowerLayerFileIsCopiedUpThenLinked() throws {
        let tmp = TempDir()
        let lower = tmp.mkdir("lower")
        try applyLayers([[.dir("bin"), .file("bin/tool", "T", mode: 0o755)]], onto: lower,
                        options: ApplyOptions(format: .overlay(.trusted)))
        let dest = tmp.mkdir("dest")
        try applyLayers([[.hardlink("bin/tool2", "bin/tool")]], onto: dest,
                        options: ApplyOptions(format: .overlay(.trusted), lowerDirs: [lower]))
        let a = try #require(lstatOrNil(dest + "/bin/tool"))
        let b = try #require(lstatOrNil(dest + "/bin/tool2"))
        #expect(a.st_ino == b.st_ino)
        #expect(a.st_mode & 0o7777 == 0o755)
        #expect(contents(dest + "/bin/tool2") == "T")
    }
}
