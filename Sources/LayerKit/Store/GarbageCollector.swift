import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Removing layers nothing uses.
extension LayerStore {
    /// The layers no image, container or snapshot references, directly or as the parent of a referenced
    /// layer (a recursive walk down the parent links from every image's top layer, every
    /// container's layer and every committed snapshot's layer).
    static let unreferencedLayersSQL = """
        WITH RECURSIVE live (chain_id) AS (
            SELECT top_chain_id FROM images WHERE top_chain_id IS NOT NULL
            UNION
            SELECT chain_id FROM containers WHERE chain_id IS NOT NULL
            UNION
            SELECT chain_id FROM snapshots WHERE chain_id IS NOT NULL
            UNION
            SELECT layers.parent FROM layers JOIN live ON layers.chain_id = live.chain_id
            WHERE layers.parent IS NOT NULL
        )
        SELECT \(layerColumns) FROM layers WHERE chain_id NOT IN (SELECT chain_id FROM live)
        """

    /// Removes every layer no image or container uses, children before parents, and returns them
    /// with the bytes freed.
    ///
    /// Holds the store lock exclusively (waiting for imports in progress to finish), first cleans
    /// up what crashes left, then deletes the records in one transaction and only then removes the
    /// dirs: an interruption leaves dirs without records, which the next open removes, and never a
    /// record without its dir. A dir that cannot be removed is reported as an error after the
    /// others are removed (its record is already gone; the next cleanup retries it).
    public func collectGarbage() throws(StoreError) -> GarbageCollection {
        try withStoreLock(.exclusive) { () throws(StoreError) -> GarbageCollection in try collectGarbageLocked() }
    }

    private func collectGarbageLocked() throws(StoreError) -> GarbageCollection {
        _ = try cleanUp()

        let removed = try transaction { () throws(StoreError) -> [StoredLayer] in
            let unreferenced = try database { db throws(DatabaseError) in
                try db.query(Self.unreferencedLayersSQL, [], Self.decodeLayer)
            }
            let ordered = Self.childrenFirst(unreferenced)
            for layer in ordered {
                // A parent's record goes after its children's: the foreign key would refuse otherwise.
                try execute("DELETE FROM layers WHERE chain_id = ?", [layer.chainID])
            }
            return ordered
        }
        FaultInjection.point("gc.deleted")

        var failures = [StoreError]()
        for layer in removed {
            let link = paths.shortLink(layer.link)
            if unlink(link) != 0 && errno != ENOENT { failures.append(.lastErrno(path: link, "cannot remove link")) }
            do throws(StoreError) { try Self.removeTree(paths.layerDir(layer.chainID)) } catch { failures.append(error) }
            unlink(paths.layerLock(layer.chainID))
            FaultInjection.point("gc.removed-one")
        }
        if !removed.isEmpty {
            try Durability.syncDirectory(paths.layersDir)
            try Durability.syncDirectory(paths.linksDir)
        }
        let blobs = try collectBlobs()
        if let first = failures.first {
            var error = StoreError(first.kind, path: first.path,
                                   "\(first.reason) (\(removed.count) layer records were removed; what is left is removed at the next cleanup)")
            error.layerError = first.layerError
            throw error
        }
        return GarbageCollection(removed: removed, removedBlobs: blobs.count, freedBlobBytes: blobs.bytes)
    }

    /// Orders layers so that every layer comes before its parent (deepest first).
    static func childrenFirst(_ layers: [StoredLayer]) -> [StoredLayer] {
        let byID = Dictionary(uniqueKeysWithValues: layers.map { ($0.chainID, $0) })
        var depth = [Digest: Int]()
        /// The number of unreferenced ancestors, walked up without recursion.
        func depthOf(_ id: Digest) -> Int {
            var path = [Digest]()
            var next: Digest? = id
            var base = -1
            while let current = next {
                if let known = depth[current] { base = known; break }
                guard byID[current] != nil, path.count <= byID.count else { break }
                path.append(current)
                next = byID[current]?.parent
            }
            for (offset, node) in path.reversed().enumerated() { depth[node] = base + 1 + offset }
            return depth[id] ?? 0
        }
        return layers.sorted { a, b in
            let da = depthOf(a.chainID), db = depthOf(b.chainID)
            return da != db ? da > db : a.chainID < b.chainID
        }
    }
}
