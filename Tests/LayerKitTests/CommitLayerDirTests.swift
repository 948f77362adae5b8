import CLayerSys
import Foundation
@testable import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Commit makes its layer dir by copying the container's upper dir while the blob is written,
/// never unpacking the blob it just wrote; the copy must be the very layer an import of that blob
/// makes.
@Suite(.serialized, .requires(.root(because: "the store mounts containers"), .kernelOverlay))
struct CommitLayerDirTests {
    @Test func theCopiedLayerEqualsTheBlobUnpackedElsewhere() throws {
        let tmp = TempDir("commit-copy")
        let store = try LayerStore(root: tmp.sub("store"))
        try store.importImage(layout: OCIImageLayout(path: BusyboxFixture.layout), reference: "latest", name: "bb")
        let container = try store.createContainer(id: "c", base: "bb")
        let mount = try store.mountContainer(container.id)
        let root = mount.mountpoint
        // Changes of every kind, made through the real overlay mount.
        let fm = FileManager.default
        try "new\n".write(toFile: root + "/new.txt", atomically: false, encoding: .utf8)
        try fm.createDirectory(atPath: root + "/etc/app/conf.d", withIntermediateDirectories: true)
        try "x=1\n".write(toFile: root + "/etc/app/conf.d/x.conf", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: root + "/bin/ls")
        try fm.createSymbolicLink(atPath: root + "/etc/app/link", withDestinationPath: "conf.d/x.conf")
        #expect(link(root + "/new.txt", root + "/etc/app/hard") == 0)
        #expect(chmod(root + "/etc", 0o750) == 0)
        #expect(setxattr(root + "/new.txt", "user.note", "hello", 5, 0) == 0)
        #expect(mkfifo(root + "/etc/app/fifo", 0o600) == 0)
        try store.unmountContainer(container.id)

        let result = try store.commit(container: container.id, as: "bb:changed")
        #expect(result.layerDir == .copiedFromUpperDir)
        _ = try store.exportImage("bb:changed", to: tmp.sub("out"), reference: "changed")

        // The same image imported into another store: its top layer unpacked from the blob.
        let other = try LayerStore(root: tmp.sub("other"))
        let imported = try other.importImage(layout: OCIImageLayout(path: tmp.sub("out")), reference: "changed", name: "copy")
        #expect(imported.layers.last?.chainID == result.chainID)
        var options = TreeSnapshot.Options()
        options.dirMtimes = false
        let copiedLayer = TreeSnapshot(store.paths.diffDir(result.chainID), options: options)
        let unpackedLayer = TreeSnapshot(other.paths.diffDir(result.chainID), options: options)
        #expect(copiedLayer == unpackedLayer,
                "the copied layer dir differs from the unpacked blob:\n\(copiedLayer.differences(from: unpackedLayer).joined(separator: "\n"))")

        // And the images show the same tree mounted.
        let a = try store.createContainer(id: "a", base: "bb:changed", readOnly: true)
        let b = try other.createContainer(id: "b", base: "copy", readOnly: true)
        let ma = try store.mountContainer(a.id)
        defer { _ = try? store.unmountContainer(a.id, detach: true) }
        let mb = try other.mountContainer(b.id)
        defer { _ = try? other.unmountContainer(b.id, detach: true) }
        let shownA = TreeSnapshot(ma.mountpoint, options: options), shownB = TreeSnapshot(mb.mountpoint, options: options)
        #expect(shownA == shownB, "\(shownA.differences(from: shownB).joined(separator: "\n"))")
        #expect(shownA.nodes["bin/ls"] == nil && shownA.nodes["etc/app/hard"] != nil)
    }
}
