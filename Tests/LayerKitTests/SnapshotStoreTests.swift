import Foundation
import LayerKit
import LayerKitSnapshotter
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The store's containerd snapshots (issue 12) through the library, without a server: deep chains
// and their `lower/` links within containerd's mount data, and the records following containerd's rules.

@Suite struct SnapshotStoreTests {
    /// A chain deep enough to need `lower/` links (real snapshots, committed one on another):
    /// after containerd's rewrite of `lowerdir` (relative to the common parent, as mount(2) gets
    /// it) the data fits one page, and each lower resolves to the chain's layer, top first.
    @Test func deepChainsGetLowerLinks() throws {
        let tmp = TempDir("snapshot-depth")
        let store = try LayerStore(root: tmp.sub("store"))
        var parent = ""
        var chain = [Digest]()
        for depth in 1...60 {
            let active = try store.createSnapshot(key: "a\(depth)", parent: parent, kind: .active, labels: [:])
            let committed = try store.commitSnapshot(key: active.name, as: "c\(depth)", labels: [:])
            chain.insert(try #require(committed.chainID), at: 0)
            parent = "c\(depth)"
            guard [1, 2, 60].contains(depth) else { continue }
            for kind in [SnapshotKind.active, .view] {
                let probe = try store.createSnapshot(key: "probe\(depth)", parent: parent, kind: kind, labels: [:])
                let mounts = try store.snapshotMounts(probe)
                try #require(mounts.count == 1)
                #expect(mounts[0].type == (kind == .view && depth == 1 ? "bind" : "overlay"))
                let data = Self.containerdMountData(mounts[0].options)
                #expect(data.utf8.count <= 4096, "depth \(depth): \(data.utf8.count) bytes of mount data")
                let lowers = mounts[0].type == "bind" ? [mounts[0].source]
                    : mounts[0].options.first { $0.hasPrefix("lowerdir=") }!.dropFirst(9).split(separator: ":").map(String.init)
                #expect(lowers.map(resolvedPath) == chain.map { Optional(store.paths.diffDir($0)) })
                #expect(lowers.allSatisfy { $0.contains("/lower/") } == (depth == 60), "links only where full paths do not fit")
                try store.removeSnapshot(probe.name)
            }
        }
        #expect(try store.verify() == [])
    }

    /// At overlayfs's maximum of 500 layers the `lower/` links still fit containerd's mount data;
    /// full diff paths would not have fitted at 60.
    @Test func fiveHundredLayersFitContainerdsMountData() throws {
        let paths = StorePaths(root: "/var/lib/layertool")
        let chain = (0..<LayerStore.maximumSnapshotDepth).map { Digest.sha256(of: Array("layer \($0)".utf8)) }
        for kind in [SnapshotKind.active, .view] {
            let mounts = LayerStore.plannedSnapshotMounts(paths: paths, id: 123456, chain: chain, kind: kind, userXattr: false)
            let data = Self.containerdMountData(mounts[0].options)
            #expect(data.utf8.count <= 4096, "\(data.utf8.count) bytes")
            #expect(data.contains("lowerdir=0:1:2:") && data.hasSuffix(":499"))
            let full = mounts[0].options.map { $0.hasPrefix("lowerdir=") ? "lowerdir=" + chain.prefix(60).map(paths.diffDir).joined(separator: ":") : $0 }
            #expect(Self.containerdMountData(full).utf8.count > 4096)
        }
    }

    /// containerd's mount(2) data for these options: when they reach a page less 512 bytes, it
    /// rewrites `lowerdir` relative to the dirs' common parent (snapshots/.. of overlay.go's layout).
    static func containerdMountData(_ options: [String]) -> String {
        var options = options
        if options.reduce(0, { $0 + $1.utf8.count }) >= 4096 - 512,
           let index = options.firstIndex(where: { $0.hasPrefix("lowerdir=") }) {
            let dirs = options[index].dropFirst(9).split(separator: ":").map(String.init)
            let sorted = dirs.sorted()
            let common = String(zip(sorted.first!, sorted.last!).prefix { $0 == $1 }.map(\.0))
            // Go's path.Dir: everything before the last "/" (".../lower/" gives ".../lower").
            let parent = String(common[..<common.lastIndex(of: "/")!]) + "/"
            options.remove(at: index)
            options.append("lowerdir=" + dirs.map { String($0.dropFirst(parent.count)) }.joined(separator: ":"))
        }
        return options.filter { !["ro", "rw", "rbind", "bind"].contains($0) }.joined(separator: ",")
    }

    /// The store side of containerd's rules, and gc keeping what snapshots use.
    @Test func recordsFollowContainerdsRules() throws {
        let tmp = TempDir("snapshot-rules")
        let store = try LayerStore(root: tmp.sub("store"))
        _ = try store.createSnapshot(key: "a", parent: nil, kind: .active, labels: ["x": "1"])
        #expect(throws: SnapshotError.self) { try store.createSnapshot(key: "a", parent: nil, kind: .view, labels: [:]) }
        let committed = try store.commitSnapshot(key: "a", as: "c", labels: ["y": "2"])
        #expect(committed.kind == .committed && committed.labels == ["y": "2"] && committed.ownsLayer)
        #expect(try store.snapshot(named: "a") == nil)
        _ = try store.createSnapshot(key: "child", parent: "c", kind: .view, labels: [:])
        func kind(_ body: () throws -> Void) -> SnapshotError.Kind? {
            do { try body() } catch let error as SnapshotError { return error.kind } catch { return nil }
            return nil
        }
        #expect(kind { try store.removeSnapshot("c") } == .failedPrecondition)
        #expect(kind { _ = try store.createSnapshot(key: "x", parent: "missing", kind: .active, labels: [:]) } == .notFound)
        #expect(kind { _ = try store.createSnapshot(key: "x", parent: "child", kind: .active, labels: [:]) } == .invalidArgument)
        #expect(kind { _ = try store.commitSnapshot(key: "child", as: "d", labels: [:]) } == .failedPrecondition)
        #expect(kind { _ = try store.updateSnapshotLabels("c", labels: [:], fieldPaths: ["parent"]) } == .invalidArgument)
        let updated = try store.updateSnapshotLabels("c", labels: ["y": "3", "z": "4"], fieldPaths: ["labels.z"])
        #expect(updated.labels == ["y": "2", "z": "4"])
        // gc keeps the committed snapshot's layer.
        #expect(try store.collectGarbage().removed.isEmpty)
        try store.removeSnapshot("child")
        try store.removeSnapshot("c")
        #expect(try store.layers().isEmpty)
        #expect(try store.verify() == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.paths.snapshotsDir).sorted() == [])
    }
}
