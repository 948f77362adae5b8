import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// containerd 1.6 (Debian's, with runc) on `layertool snapshotter`, as a proxy plugin: images
// imported and run with `ctr --snapshotter layertool`, removed and collected; the server killed
// mid-unpack; and an image the store already has pulled through containerd's unpacker without
// containerd applying a layer.

@Suite(.serialized) struct SnapshotterContainerdTests {
    static func layers(in store: String) throws -> [StoredLayer] { try LayerStore(root: store).layers() }

    /// Import, run, list, remove: what containerd applied is in the store as layers, and after
    /// `ctr images rm --sync` (containerd's gc: Remove of each snapshot, then Cleanup) the store
    /// holds no snapshot, layer or dir.
    @Test(.requires(SnapshotterTestEnv.containerdRequirements))
    func importRunRemove() throws {
        let env = try ContainerdEnvironment()
        let image = try env.importBusybox()
        #expect(env.daemonLog.components(separatedBy: "diff applied").count - 1 == 2, "containerd applied both layers")

        let listed = try env.ctr(["snapshots", "--snapshotter", "layertool", "ls"])
        let committed = listed.stdout.split(separator: "\n").filter { $0.contains("Committed") }
        #expect(listed.status == 0 && committed.count == 2, "\(listed.stdout)\(listed.stderr)")
        let store = try LayerStore(root: env.store)
        let snapshots = try store.snapshots()
        #expect(snapshots.count == 2 && snapshots.allSatisfy { $0.kind == .committed && $0.ownsLayer })
        let layers = try store.layers()
        #expect(Set(layers.map(\.chainID)) == Set(snapshots.compactMap(\.chainID)))
        #expect(layers.contains { $0.parent == nil } && layers.contains { $0.parent != nil })
        // Each committed snapshot's name is containerd's, ending in the image's chainID.
        #expect(snapshots.contains { $0.name.hasSuffix("/sha256:0763ad56266eef7808506d5feafa461aaace603b78cd626ae0c9750809a39b5e") })

        let ran = try env.runBusybox(image, id: "e2e-run")
        #expect(ran.status == 0 && ran.stdout == ContainerdEnvironment.runOutput, "ctr run: \(ran.stdout)\(ran.stderr)\n\(env.daemonLog.suffix(4000))")
        #expect(try env.waitForSnapshots(count: 2), "the container's active snapshot is removed after ctr run --rm")

        let removed = try env.ctr(["images", "rm", "--sync", image])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(try env.waitForSnapshots(), "containerd's gc left snapshots")
        let after = try LayerStore(root: env.store)
        #expect(try after.layers().isEmpty)
        #expect(try after.verify() == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: after.paths.layersDir).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: after.paths.linksDir).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: after.paths.snapshotsDir) == ["server.lock"])
    }

    /// The server killed while containerd unpacks (it dies committing the second layer, after
    /// the records, before the move), restarted: the next import and run succeed, and gc then
    /// leaves nothing, the snapshot of the interrupted commit included.
    @Test(.requires(SnapshotterTestEnv.containerdRequirements))
    func killedMidUnpack() throws {
        let env = try ContainerdEnvironment()
        env.server?.stop()
        try env.startServer(environment: ["LAYERKIT_STORE_CRASH": "snapshot.commit.recorded:2"])
        #expect(try env.waitForContainerdToReconnect())
        let failed = try env.ctr(["images", "import", "--snapshotter", "layertool", try env.busyboxArchive()])
        #expect(failed.status != 0, "the import should fail with its snapshotter gone: \(failed.stdout)")
        let exit = env.server?.server.waitForExit(seconds: 30)
        #expect(exit?.signaled == true && exit?.status == SIGKILL, "\(env.server?.server.output.suffix(4000) ?? "")")
        if exit == nil {
            env.server?.server.signal(SIGKILL)
            _ = env.server?.server.waitForExit(seconds: 30)
        }

        try env.startServer()
        #expect(try env.waitForContainerdToReconnect())
        let image = try env.importBusybox()
        let ran = try env.runBusybox(image, id: "after-crash")
        #expect(ran.status == 0 && ran.stdout == ContainerdEnvironment.runOutput, "\(ran.stdout)\(ran.stderr)")
        #expect(try LayerStore(root: env.store).verify() == [])

        #expect(try env.ctr(["images", "rm", "--sync", image]).status == 0)
        #expect(try env.waitForSnapshots(), "containerd's gc left snapshots")
        #expect(try Self.layers(in: env.store).isEmpty)
    }

    /// The remote-snapshot fast path: with the image already in the store (`layertool unpack
    /// --image`), containerd's unpacker (client.Pull with unpack, the path CRI and nerdctl take)
    /// pulls it from a registry and applies no layer: each Prepare is answered AlreadyExists with
    /// a committed snapshot on the store's layer, found by List with containerd's label filter.
    @Test(.requires(SnapshotterTestEnv.containerdRequirements))
    func pullOfAnImageTheStoreHasAppliesNothing() throws {
        let binaries = try SnapshotterTestEnv.harnessBinaries()
        let env = try ContainerdEnvironment()
        let unpacked = try run(Layertool.path, ["unpack", "--image", BusyboxFixture.layout + ":latest",
                                                              "--name", "busybox", "--root", env.store])
        try #require(unpacked.status == 0, "layertool unpack: \(unpacked.stderr)")
        let storeImage = try #require(try LayerStore(root: env.store).image(named: "busybox"))

        let registry = try RegistryServer()
        let reference = "\(registry.host)/layerkit/busybox:latest"
        let copied = try run(try requireTool("skopeo"), ["copy", "--dest-tls-verify=false", "oci:" + BusyboxFixture.layout + ":latest",
                                                "docker://" + reference])
        try #require(copied.status == 0, "skopeo copy: \(copied.stderr)")

        let appliedBefore = env.daemonLog.components(separatedBy: "diff applied").count
        let pulled = try run(binaries + "/snapshotter-tool", ["pull", "--containerd", env.containerdSocket, "--namespace", "e2e", reference])
        #expect(pulled.status == 0, "\(pulled.stdout)\(pulled.stderr)\n\(env.server?.server.output.suffix(4000) ?? "")")
        #expect(pulled.stdout.contains("chainID \(storeImage.topChainID!)"), "\(pulled.stdout)")
        #expect(env.daemonLog.components(separatedBy: "diff applied").count == appliedBefore, "containerd applied a layer")
        let served = env.server!.server.output.components(separatedBy: "served from the store's layer").count - 1
        #expect(served == 2, "\(env.server!.server.output)")

        let store = try LayerStore(root: env.store)
        #expect(try store.layers().count == 2, "no new layer")
        let snapshots = try store.snapshots()
        #expect(snapshots.map(\.chainID) == storeImage.chainIDs.map { Optional($0) })
        #expect(snapshots.map(\.name) == storeImage.chainIDs.map(\.description))
        #expect(snapshots.allSatisfy { $0.kind == .committed && !$0.ownsLayer })
        let listed = try env.ctr(["snapshots", "--snapshotter", "layertool", "ls"])
        #expect(listed.stdout.split(separator: "\n").filter { $0.contains("Committed") }.count == 2, "\(listed.stdout)")

        let ran = try env.runBusybox(reference, id: "fast-path")
        #expect(ran.status == 0 && ran.stdout == ContainerdEnvironment.runOutput, "\(ran.stdout)\(ran.stderr)")

        #expect(try env.ctr(["images", "rm", "--sync", reference]).status == 0)
        #expect(try env.waitForSnapshots())
        // The layers are the image's: they stay until `layertool rm busybox` and gc.
        let after = try LayerStore(root: env.store)
        #expect(try after.layers().map(\.chainID).sorted() == storeImage.chainIDs.sorted())
        #expect(try after.verify() == [])
    }
}
