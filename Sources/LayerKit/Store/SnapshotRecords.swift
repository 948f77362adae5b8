import Foundation

/// The kinds of containerd snapshot.
public enum SnapshotKind: String, Sendable, Codable, CaseIterable {
    /// Read-only, on a committed parent; never committed.
    case view
    /// Writable (an upper dir over its parent's layers); committed or removed.
    case active
    /// Immutable: a layer of the store, a parent for others.
    case committed
}

/// A snapshot as the store records it: containerd's key (or committed name), kind, parent and
/// labels, and where its files are.
public struct StoredSnapshot: Sendable, Equatable {
    /// The store's number for it: its dir is `ROOT/snapshots/<id>` (never reused).
    public var id: Int64
    /// containerd's key (active, view) or name (committed); unique in the store.
    public var name: String
    public var kind: SnapshotKind
    /// The committed snapshot below, nil for none.
    public var parentID: Int64?
    /// The parent's name ("" for none), as containerd's `Info.parent` says it.
    public var parentName: String?
    /// For a committed snapshot, the layer holding its files (`ROOT/layers/<hex>/diff`).
    public var chainID: Digest?
    /// Whether the layer was made by committing this snapshot (and goes when it is removed),
    /// rather than being a layer the store already had (an image's, shared).
    public var ownsLayer: Bool
    public var labels: [String: String]
    /// Nanoseconds since the epoch (containerd compares them exactly).
    public var createdNanoseconds: Int64
    public var updatedNanoseconds: Int64

    public init(id: Int64, name: String, kind: SnapshotKind, parentID: Int64?, parentName: String?, chainID: Digest?,
                ownsLayer: Bool, labels: [String: String], createdNanoseconds: Int64, updatedNanoseconds: Int64) {
        self.id = id
        self.name = name
        self.kind = kind
        self.parentID = parentID
        self.parentName = parentName
        self.chainID = chainID
        self.ownsLayer = ownsLayer
        self.labels = labels
        self.createdNanoseconds = createdNanoseconds
        self.updatedNanoseconds = updatedNanoseconds
    }
}

/// What a snapshot's own files take on disk.
public struct SnapshotUsage: Sendable, Equatable {
    /// Bytes of the allocated blocks; each inode counted once.
    public var bytes: Int64
    /// Inodes (files, dirs, links, ...), the top dir included.
    public var inodes: Int64
}
