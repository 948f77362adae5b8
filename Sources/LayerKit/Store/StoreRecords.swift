import Foundation

/// A layer in the store: its identity, where it came from, and how much disk it takes.
public struct StoredLayer: Sendable, Codable, Equatable {
    /// The layer's chainID (its identity in the store: the same diffs in the same order).
    public var chainID: Digest
    /// sha256 of the layer's uncompressed tar.
    public var diffID: Digest
    /// The digest of the blob it was unpacked from, when it came from one.
    public var blobDigest: Digest?
    /// The size of that blob.
    public var blobSize: Int64?
    /// The blob's media type.
    public var mediaType: String?
    /// The chainID of the layer below, nil for a bottom layer.
    public var parent: Digest?
    /// The 26-character short name (`ROOT/l/<link>`).
    public var link: String
    /// Bytes on disk of the layer's `diff/` dir.
    public var size: Int64
    /// When it was recorded.
    public var created: Date
}

/// An image in the store: a name for a top layer, with the manifest and config it came with.
public struct StoredImage: Sendable, Codable, Equatable {
    /// The image's name in the store (unique).
    public var name: String
    /// The digest of the image manifest it was imported from.
    public var manifestDigest: Digest
    /// The digest of the image config (its ID in Docker's terms).
    public var configDigest: Digest
    /// The chainID of the top layer; nil for an image without layers.
    public var topChainID: Digest?
    /// The image's layers, bottom first (the chain of `topChainID`).
    public var chainIDs: [Digest]
    /// Bytes on disk of all its layers' diff dirs (shared layers counted in full).
    public var size: Int64
    /// When the record was (last) written.
    public var created: Date
}

/// A container: a writable (or read-only) root filesystem over an image's layers.
public struct StoredContainer: Sendable, Codable, Equatable {
    /// The container's ID (its name): `ROOT/containers/<id>`.
    public var id: String
    /// The image it was created from, by name (informational: the name may since have moved).
    public var image: String?
    /// The layer its rootfs sits on: this layer and its chain are kept by gc.
    public var chainID: Digest?
    /// The mount driver: `.overlay` (kernel overlayfs) or `.fuse` (the userspace union) once
    /// mounted; the driver asked for (possibly `.auto`) before.
    public var driver: MountDriver
    /// Where its rootfs is mounted, when it is.
    public var mountpoint: String?
    public var state: ContainerState
    /// When the record was written.
    public var created: Date
    /// Mounted without an upper dir: the image as it is, read-only.
    public var readOnly: Bool = false
    /// Mounted with overlayfs's `volatile` (no syncs; the upper is thrown away after a crash).
    public var volatile: Bool = false
    /// The FUSE daemon serving the mount (driver `fuse`).
    public var daemonPID: Int32?

    /// Whether the record says it is mounted.
    public var isMounted: Bool { state == .mounted || state == .mounting }
}

/// The states of a container record (stored as their raw values).
public enum ContainerState: String, Sendable, Codable, CaseIterable {
    /// Made, never mounted.
    case created
    /// Recorded before the mount call: a crash right after leaves this, which the next command
    /// resolves by looking at the mount table.
    case mounting
    case mounted
    case unmounted
}

/// One layer of an import.
public struct ImportedLayer: Sendable, Codable, Equatable {
    /// The layer's chainID (its identity in the store).
    public var chainID: Digest
    /// sha256 of its uncompressed tar, as verified.
    public var diffID: Digest
    /// The digest of its blob, as verified.
    public var blobDigest: Digest
    /// True if this import unpacked it; false if the store already had it.
    public var unpacked: Bool
    /// Bytes on disk of its diff dir.
    public var size: Int64
}

/// What `LayerStore.importImage` did.
public struct ImportResult: Sendable, Codable, Equatable {
    /// The image record as written.
    public var image: StoredImage
    /// Every layer, bottom first.
    public var layers: [ImportedLayer]
    /// How many layers this import unpacked (the others were already present).
    public var unpackedCount: Int { layers.filter(\.unpacked).count }
}

/// What `LayerStore.collectGarbage` removed.
public struct GarbageCollection: Sendable, Codable, Equatable {
    /// The layers removed, children before parents.
    public var removed: [StoredLayer]

    /// Blobs removed from the content dir (no image or layer needs them).
    public var removedBlobs: Int
    /// Bytes those blobs took.
    public var freedBlobBytes: Int64

    public init(removed: [StoredLayer], removedBlobs: Int = 0, freedBlobBytes: Int64 = 0) {
        self.removed = removed
        self.removedBlobs = removedBlobs
        self.freedBlobBytes = freedBlobBytes
    }
    /// Bytes on disk the removed layers' diff dirs took (blobs: `freedBlobBytes`).
    public var freedBytes: Int64 {
        removed.reduce(Int64(0)) { total, layer in
            let (sum, overflow) = total.addingReportingOverflow(layer.size)
            return overflow ? .max : sum
        }
    }
}

/// Something found wrong by `LayerStore.verify`.
public struct StoreProblem: Sendable, Codable, Equatable, CustomStringConvertible {
    /// The file, dir or database concerned.
    public var path: String
    /// What is wrong with it.
    public var problem: String
    public var description: String { "\(path): \(problem)" }
}

/// What opening the store cleaned up after an earlier crash or interrupted gc.
public struct StoreCleanup: Sendable, Equatable {
    /// Staging dirs removed.
    public var stagingDirs: [String] = []
    /// Layer dirs without a record, removed.
    public var unrecordedLayers: [String] = []
    /// Short links that pointed nowhere useful, removed.
    public var danglingLinks: [String] = []
    /// Short links recreated for recorded layers.
    public var restoredLinks: [String] = []
    /// Container dirs without a record, removed.
    public var orphanContainers: [String] = []
    /// containerd snapshot dirs without a record, removed, and interrupted commits finished.
    public var snapshotRepairs: [String] = []
    /// Blobs an interrupted streaming import had added for records it never wrote, removed.
    public var orphanBlobs: [String] = []
    /// False when another process was using the store, so nothing was looked at.
    public var ran = false

    public var isEmpty: Bool { stagingDirs.isEmpty && unrecordedLayers.isEmpty && danglingLinks.isEmpty && restoredLinks.isEmpty && orphanContainers.isEmpty && snapshotRepairs.isEmpty
        && orphanBlobs.isEmpty }
}
