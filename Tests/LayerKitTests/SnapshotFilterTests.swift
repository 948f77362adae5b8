import Foundation
import LayerKit
import LayerKitSnapshotter
import Testing
#if canImport(Glibc)
import Glibc
#endif

// containerd's snapshot list filters (issue 12), parsed and matched without a server; malformed ones refused.

@Suite struct SnapshotFilterTests {
    static func snapshot(_ name: String, _ kind: SnapshotKind, parent: String? = nil, labels: [String: String] = [:]) -> StoredSnapshot {
        StoredSnapshot(id: 1, name: name, kind: kind, parentID: parent == nil ? nil : 2, parentName: parent, chainID: nil,
                       ownsLayer: false, labels: labels, createdNanoseconds: 0, updatedNanoseconds: 0)
    }

    static let all = [
        snapshot("a-np", .active, labels: ["containerd.io/gc.root": "check-walk"]),
        snapshot("p", .committed, labels: ["containerd.io/gc.root": "check-walk"]),
        snapshot("a", .active, parent: "p", labels: ["containerd.io/gc.root": "check-walk"]),
        snapshot("v", .view, parent: "p", labels: ["containerd.io/gc.root": "check-walk"]),
        snapshot("p-wl", .committed, labels: ["l": "1", "containerd.io/gc.root": "check-walk"]),
        snapshot("a-wl", .active, parent: "p-wl", labels: ["l": "2", "containerd.io/gc.root": "check-walk"]),
        snapshot("sha256:abc", .committed, parent: "default/3/sha256:def", labels: ["containerd.io/snapshot.ref": "sha256:abc"]),
    ]

    @Test(arguments: [
        (["labels.\"containerd.io/gc.root\"==check-walk"], ["a-np", "p", "a", "v", "p-wl", "a-wl"]),
        (["kind==active,labels.\"containerd.io/gc.root\"==check-walk"], ["a-np", "a", "a-wl"]),
        (["name==p", "name==a-wl"], ["p", "a-wl"]),
        (["name==a-wl,labels.l"], ["a-wl"]),
        (["parent==p"], ["a", "v"]),
        (["parent!=\"\",labels.\"containerd.io/gc.root\"==check-walk"], ["a", "v", "a-wl"]),
        (["labels.l"], ["p-wl", "a-wl"]),
        (["labels.l==2"], ["a-wl"]),
        (["labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"default/3/sha256:def\""], ["sha256:abc"]),
        (["name~=/^a-/"], ["a-np", "a-wl"]),
        ([], ["a-np", "p", "a", "v", "p-wl", "a-wl", "sha256:abc"]),
    ])
    func selects(filters: [String], expected: [String]) throws {
        let filter = try SnapshotFilter(filters)
        #expect(Self.all.filter(filter.matches).map(\.name) == expected)
    }

    @Test(arguments: ["kind==", "labels.\"unterminated==x", "name=x", "==x", "name==a,", "name~=/(/", "labels.\"a\\q\"==b"])
    func refusesMalformed(filter: String) {
        #expect(throws: SnapshotError.self) { try SnapshotFilter([filter]) }
        do { _ = try SnapshotFilter([filter]) } catch { #expect(error.kind == .invalidArgument) }
    }
}
