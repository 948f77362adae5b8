import CLayerSys
import CSQLite
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// containerd's snapshots, kept in the store beside images and containers (`layertool snapshotter`
/// serves them to containerd).
///
/// - A **committed** snapshot is a layer: its files are `ROOT/layers/<hex>/diff`, with a layer
///   record like an imported one. Committing an active snapshot moves its upper dir there under a
///   store-local chainID (sha256 of random bytes: containerd applied the content, so its diffID is
///   not known here, and a client's word for it is not taken); a Prepare served from a layer the
///   store already had (`adoptLayer`) names that layer, shared with the images that have it.
/// - An **active** snapshot is a container-like pair `ROOT/snapshots/<id>/{upper,work}` over its
///   parent's chain; a **view** has only `ROOT/snapshots/<id>/` (an `empty/` dir for a view of
///   nothing, `lower/` links for deep chains).
///
/// Crash safety follows the rest of the store: dirs are made before the record that names them,
/// records are removed before their dirs, and whatever a crash leaves is put right by the next
/// cleanup (`recoverSnapshots`). Every change holds the store lock shared, as imports do, so gc
/// and cleanup (exclusive) never see one half done.
///
/// Errors are `SnapshotError`s in containerd's classes (not found, already exists, failed
/// precondition, invalid argument).
extension LayerStore {
    /// Overlayfs stacks at most this many lower layers.
    public static let maximumSnapshotDepth = 500

    // MARK: Records

    /// The snapshot with this key or name, or nil.
    public func snapshot(named name: String) throws(SnapshotError) -> StoredSnapshot? {
        try snapshotQuery("WHERE s.name = ?", [name], while: "cannot read snapshot \(name.debugDescription)").first
    }

    /// Every snapshot, in id order.
    public func snapshots() throws(SnapshotError) -> [StoredSnapshot] {
        try snapshotQuery("ORDER BY s.id", [], while: "cannot list snapshots")
    }

    // MARK: Prepare, View

    /// Creates an active (writable) or view (read-only) snapshot `key` on the committed snapshot
    /// `parent` (nil or "" for none) and returns it. Dirs first, then the record, in one
    /// transaction: a crash leaves at most a dir without a record, which cleanup removes.
    public func createSnapshot(key: String, parent: String?, kind: SnapshotKind,
                               labels: [String: String]) throws(SnapshotError) -> StoredSnapshot {
        precondition(kind != .committed, "committed snapshots are made by commitSnapshot or adoptLayer")
        try Self.validateSnapshotName(key, what: "key")
        try Self.validateLabels(labels)
        let what = "cannot create snapshot \(key.debugDescription)"
        return try withSnapshotLock(what) { () throws(SnapshotError) -> StoredSnapshot in
            guard try snapshot(named: key) == nil else {
                throw SnapshotError(.alreadyExists, "snapshot \(key.debugDescription) already exists")
            }
            let parentRecord = try committedParent(parent)
            let chain = try snapshotChain(parentRecord)
            guard chain.count <= Self.maximumSnapshotDepth else {
                throw SnapshotError(.failedPrecondition,
                                    "\(what): its parent chain has \(chain.count) layers; overlayfs stacks at most \(Self.maximumSnapshotDepth)")
            }
            let now = Self.nowNanoseconds()
            return try snapshotTransaction(what) { () throws(StoreError) -> StoredSnapshot in
                try execute("""
                    INSERT INTO snapshots (name, kind, parent, chain_id, owns_layer, labels, created, updated)
                    VALUES (?, ?, ?, NULL, 0, ?, ?, ?)
                    """, [key, kind.rawValue, parentRecord?.id, Self.encodeLabels(labels), now, now])
                let id = try lastInsertedRowID()
                let dir = paths.snapshotDir(id)
                // A dir of this number can only be a leftover of a crashed attempt (its record was
                // rolled back with the number): nothing names it.
                if access(dir, F_OK) == 0 { try Self.removeTree(dir) }
                var made = false
                defer { if !made { try? Self.removeTree(dir) } }
                try ensureSnapshotsDirectory()
                try Self.makeDir(dir, 0o700)
                if kind == .active {
                    try Self.makeDir(paths.snapshotUpperDir(id), 0o755)
                    try Self.makeDir(paths.snapshotWorkDir(id), 0o700)
                } else if chain.isEmpty {
                    try Self.makeDir(paths.snapshotEmptyDir(id), 0o755)
                }
                if SnapshotMountPlan.needsLowerLinks(paths: paths, id: id, chain: chain, kind: kind,
                                                     userXattr: overlayNamespace == .user) {
                    try makeLowerLinks(id: id, chain: chain)
                }
                FaultInjection.point("snapshot.created-dirs")
                made = true
                return StoredSnapshot(id: id, name: key, kind: kind, parentID: parentRecord?.id, parentName: parentRecord?.name,
                                      chainID: nil, ownsLayer: false, labels: labels, createdNanoseconds: now, updatedNanoseconds: now)
            }
        }
    }

    /// Records the committed snapshot `name` for a layer the store already has (imported by
    /// `layertool unpack --image`, or committed), on the committed snapshot `parent`, whose
    /// layer must be the layer's parent: containerd's unpacker then skips applying it. Returns
    /// nil when the layer cannot serve (not in the store, or on another parent).
    ///
    /// When a committed snapshot `name` already exists on the same layer and parent, it is
    /// returned as it is. The layer stays the images' (it is not removed with the snapshot).
    public func adoptLayer(_ chainID: Digest, as name: String, parent: String?,
                           labels: [String: String]) throws(SnapshotError) -> StoredSnapshot? {
        try Self.validateSnapshotName(name, what: "name")
        try Self.validateLabels(labels)
        let what = "cannot record layer \(chainID) as snapshot \(name.debugDescription)"
        return try withSnapshotLock(what) { () throws(SnapshotError) -> StoredSnapshot? in
            let layer: StoredLayer?
            do throws(StoreError) { layer = try self.layer(chainID) } catch { throw SnapshotError(error, while: what) }
            guard let layer, Self.isDirectory(paths.diffDir(chainID)) else { return nil }
            let parentRecord: StoredSnapshot?
            do throws(SnapshotError) { parentRecord = try committedParent(parent) } catch { return nil }
            guard layer.parent == parentRecord?.chainID else { return nil }
            if let existing = try snapshot(named: name) {
                let same = existing.kind == .committed && existing.chainID == chainID && existing.parentID == parentRecord?.id
                return same ? existing : nil
            }
            let now = Self.nowNanoseconds()
            return try snapshotTransaction(what) { () throws(StoreError) -> StoredSnapshot in
                try execute("""
                    INSERT INTO snapshots (name, kind, parent, chain_id, owns_layer, labels, created, updated)
                    VALUES (?, 'committed', ?, ?, 0, ?, ?, ?)
                    """, [name, parentRecord?.id, chainID, Self.encodeLabels(labels), now, now])
                return StoredSnapshot(id: try lastInsertedRowID(), name: name, kind: .committed, parentID: parentRecord?.id,
                                      parentName: parentRecord?.name, chainID: chainID, ownsLayer: false, labels: labels,
                                      createdNanoseconds: now, updatedNanoseconds: now)
            }
        }
    }

    // MARK: Commit

    /// Commits the active snapshot `key` as `name`: its upper dir becomes the layer
    /// `ROOT/layers/<hex>/diff` under a new store-local chainID, and the snapshot keeps its number.
    ///
    /// Order: the file system is synced (what containerd wrote is on disk); the layer dir, its
    /// link file and `l/` link are made; then one transaction records the layer and turns the
    /// record committed; then the upper dir is renamed into the layer. A crash before the
    /// transaction leaves an unrecorded layer dir (cleanup removes it, the active snapshot is
    /// intact); after it, cleanup finishes the rename.
    public func commitSnapshot(key: String, as name: String, labels: [String: String]) throws(SnapshotError) -> StoredSnapshot {
        try Self.validateSnapshotName(name, what: "name")
        try Self.validateLabels(labels)
        let what = "cannot commit snapshot \(key.debugDescription) as \(name.debugDescription)"
        return try withSnapshotLock(what) { () throws(SnapshotError) -> StoredSnapshot in
            guard let active = try snapshot(named: key) else {
                throw SnapshotError(.notFound, "\(what): no snapshot \(key.debugDescription)")
            }
            guard active.kind == .active else {
                throw SnapshotError(.failedPrecondition, "\(what): it is a \(active.kind.rawValue) snapshot, not an active one")
            }
            guard try snapshot(named: name) == nil else {
                throw SnapshotError(.alreadyExists, "\(what): snapshot \(name.debugDescription) already exists")
            }
            let parentChainID: Digest? = try active.parentID.flatMap { (id) throws(SnapshotError) -> Digest? in
                try snapshotQuery("WHERE s.id = ?", [id], while: what).first?.chainID
            }
            let upper = paths.snapshotUpperDir(active.id)
            let chainID = Self.localChainID()
            let link = ShortLink.generate()
            let layerDir = paths.layerDir(chainID)
            do throws(StoreError) {
                guard Self.isDirectory(upper) else {
                    throw StoreError(.incompatible, path: upper, "the snapshot's upper dir is missing")
                }
                let usage = try SnapshotUsageWalker.usage(of: upper)
                try Durability.syncFileSystem(containing: upper)
                try Self.makeDir(layerDir, 0o700)
                try Self.writeFile(paths.linkFile(chainID), link)
                let linkPath = paths.shortLink(link)
                guard symlink(StorePaths.shortLinkTarget(chainID), linkPath) == 0 else { throw .lastErrno(path: linkPath, "cannot create link") }
                try Durability.syncDirectory(layerDir)
                try Durability.syncDirectory(paths.layersDir)
                try Durability.syncDirectory(paths.linksDir)
                FaultInjection.point("snapshot.commit.layer-dir")

                let now = Self.nowNanoseconds()
                do throws(StoreError) {
                    try transaction { () throws(StoreError) in
                        try execute("""
                            INSERT INTO layers (chain_id, diff_id, blob_digest, blob_size, media_type, parent, link, size, created)
                            VALUES (?, ?, NULL, NULL, NULL, ?, ?, ?, ?)
                            """, [chainID, chainID, parentChainID, link, usage.bytes, Self.now()])
                        try execute("""
                            UPDATE snapshots SET name = ?, kind = 'committed', chain_id = ?, owns_layer = 1, labels = ?,
                                created = ?, updated = ? WHERE id = ?
                            """, [name, chainID, Self.encodeLabels(labels), now, now, active.id])
                    }
                } catch {
                    unlink(linkPath)
                    try? Self.removeTree(layerDir)
                    throw error
                }
                FaultInjection.point("snapshot.commit.recorded")
                guard rename(upper, paths.diffDir(chainID)) == 0 else {
                    let failure = StoreError.lastErrno(path: upper, "cannot move the upper dir into the layer \(chainID)")
                    // Put the records back as they were; if even that fails, cleanup finishes the move.
                    try? transaction { () throws(StoreError) in
                        try execute("UPDATE snapshots SET name = ?, kind = 'active', chain_id = NULL, owns_layer = 0, labels = ?, created = ?, updated = ? WHERE id = ?",
                                    [active.name, Self.encodeLabels(active.labels), active.createdNanoseconds, active.updatedNanoseconds, active.id])
                        try execute("DELETE FROM layers WHERE chain_id = ?", [chainID])
                    }
                    unlink(linkPath)
                    try? Self.removeTree(layerDir)
                    throw failure
                }
                try Durability.syncDirectory(layerDir)
                return StoredSnapshot(id: active.id, name: name, kind: .committed, parentID: active.parentID, parentName: active.parentName,
                                      chainID: chainID, ownsLayer: true, labels: labels, createdNanoseconds: now, updatedNanoseconds: now)
            } catch {
                throw SnapshotError(error, while: what)
            }
        }
    }

    // MARK: Remove

    /// Removes a snapshot that no other snapshot has as parent: its record first, then its dirs
    /// (and the layer it made, unless something else uses it). A dir that cannot be removed is
    /// left for the next cleanup (the error says so).
    public func removeSnapshot(_ key: String) throws(SnapshotError) {
        let what = "cannot remove snapshot \(key.debugDescription)"
        try withSnapshotLock(what) { () throws(SnapshotError) in
            guard let record = try snapshot(named: key) else { throw SnapshotError(.notFound, "\(what): no such snapshot") }
            let children = try snapshotQuery("WHERE s.parent = ?", [record.id], while: what)
            guard children.isEmpty else {
                throw SnapshotError(.failedPrecondition,
                                    "\(what): \(children.count) snapshot\(children.count == 1 ? " has" : "s have") it as parent (\(children.prefix(3).map(\.name.debugDescription).joined(separator: ", ")))")
            }
            let droppedLayer = try snapshotTransaction(what) { () throws(StoreError) -> StoredLayer? in
                try execute("DELETE FROM snapshots WHERE id = ?", [record.id])
                guard record.ownsLayer, let chainID = record.chainID, try !layerIsReferenced(chainID) else { return nil }
                let layer = try self.layer(chainID)
                try execute("DELETE FROM layers WHERE chain_id = ?", [chainID])
                return layer
            }
            FaultInjection.point("snapshot.removed-record")
            do throws(StoreError) {
                if let layer = droppedLayer {
                    unlink(paths.shortLink(layer.link))
                    try Self.removeTree(paths.layerDir(layer.chainID))
                    unlink(paths.layerLock(layer.chainID))
                }
                let dir = paths.snapshotDir(record.id)
                if access(dir, F_OK) == 0 { try Self.removeTree(dir) }
            } catch {
                throw SnapshotError(error, while: "\(what) (its record is gone; the next cleanup retries)")
            }
        }
    }

    // MARK: Update

    /// Changes a snapshot's labels as containerd's field paths say: `labels` replaces them all,
    /// `labels.KEY` sets (or, absent from `labels`, deletes) one; no path replaces them all. Any
    /// other path is refused (the rest of a snapshot cannot change).
    public func updateSnapshotLabels(_ name: String, labels: [String: String], fieldPaths: [String]) throws(SnapshotError) -> StoredSnapshot {
        try Self.validateLabels(labels)
        let what = "cannot update snapshot \(name.debugDescription)"
        return try withSnapshotLock(what) { () throws(SnapshotError) -> StoredSnapshot in
            guard var record = try snapshot(named: name) else { throw SnapshotError(.notFound, "\(what): no such snapshot") }
            var updated = record.labels
            if fieldPaths.isEmpty {
                updated = labels
            } else {
                for path in fieldPaths {
                    if path == "labels" {
                        updated = labels
                    } else if path.hasPrefix("labels."), path.count > 7 {
                        let key = String(path.dropFirst(7))
                        updated[key] = labels[key]
                    } else {
                        throw SnapshotError(.invalidArgument, "\(what): field \(path.debugDescription) cannot be changed (only labels can)")
                    }
                }
            }
            try Self.validateLabels(updated)
            let now = Self.nowNanoseconds()
            try snapshotTransaction(what) { () throws(StoreError) in
                try execute("UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?", [Self.encodeLabels(updated), now, record.id])
            }
            record.labels = updated
            record.updatedNanoseconds = now
            return record
        }
    }

    // MARK: Usage, mounts

    /// What a snapshot's own files take: an active one's upper dir, a committed one's layer, a
    /// view's own (nearly empty) dir.
    public func snapshotUsage(_ name: String) throws(SnapshotError) -> SnapshotUsage {
        try Self.measureSnapshotDirectory(try snapshotUsageDirectory(name), of: name)
    }

    /// The dir whose files are a snapshot's own (see `snapshotUsage`), for measuring it apart
    /// from the store's other work.
    public func snapshotUsageDirectory(_ name: String) throws(SnapshotError) -> String {
        guard let record = try snapshot(named: name) else {
            throw SnapshotError(.notFound, "cannot measure snapshot \(name.debugDescription): no such snapshot")
        }
        switch record.kind {
        case .active: return paths.snapshotUpperDir(record.id)
        case .view: return paths.snapshotDir(record.id)
        case .committed: return paths.diffDir(record.chainID!)
        }
    }

    /// Bytes and inodes under `dir` (a walk: slow for big trees; needs no store access).
    public static func measureSnapshotDirectory(_ dir: String, of name: String) throws(SnapshotError) -> SnapshotUsage {
        do throws(StoreError) { return try SnapshotUsageWalker.usage(of: dir) } catch {
            if case .system(.noSuchFileOrDirectory) = error.kind {
                throw SnapshotError(.notFound, "cannot measure snapshot \(name.debugDescription): it was removed")
            }
            throw SnapshotError(error, while: "cannot measure snapshot \(name.debugDescription)")
        }
    }

    /// The mounts of an active or view snapshot, as containerd mounts them (see `SnapshotMountPlan`).
    public func snapshotMounts(_ snapshot: StoredSnapshot) throws(SnapshotError) -> [MountSpec] {
        guard snapshot.kind != .committed else {
            throw SnapshotError(.failedPrecondition, "snapshot \(snapshot.name.debugDescription) is committed: it has no mounts (make a view or an active snapshot of it)")
        }
        let parent: StoredSnapshot? = try snapshot.parentID.flatMap { (id) throws(SnapshotError) -> StoredSnapshot? in
            try snapshotQuery("WHERE s.id = ?", [id], while: "cannot read snapshot \(snapshot.name.debugDescription)").first
        }
        let chain = try snapshotChain(parent)
        return SnapshotMountPlan(paths: paths, id: snapshot.id, chain: chain, kind: snapshot.kind,
                                 userXattr: overlayNamespace == .user).mounts
    }

    /// The mounts a snapshot `id` of `kind` on `chain` (top first) gets in a store at `paths`
    /// (see `SnapshotMountPlan`); `snapshotMounts` is this for a recorded snapshot.
    public static func plannedSnapshotMounts(paths: StorePaths, id: Int64, chain: [Digest], kind: SnapshotKind,
                                             userXattr: Bool) -> [MountSpec] {
        SnapshotMountPlan(paths: paths, id: id, chain: chain, kind: kind, userXattr: userXattr).mounts
    }

    // MARK: Cleanup

    /// Removes what no snapshot record names (what `Remove` could not: dirs under
    /// `ROOT/snapshots/`) and finishes a commit a crash interrupted, as the store's cleanup does
    /// when it is opened idle; returns the paths concerned. Safe under the shared store lock
    /// because only the one snapshot server (`claimSnapshotService`) changes snapshots.
    public func cleanUpSnapshots() throws(SnapshotError) -> [String] {
        try withSnapshotLock("cannot clean up snapshots") { () throws(SnapshotError) -> [String] in
            do throws(StoreError) { return try recoverSnapshots() } catch {
                throw SnapshotError(error, while: "cannot clean up snapshots")
            }
        }
    }

    // MARK: Internals

    /// Runs `body` holding the store lock shared (gc and crash cleanup wait meanwhile).
    func withSnapshotLock<T>(_ what: String, _ body: () throws(SnapshotError) -> T) throws(SnapshotError) -> T {
        let lock: FileLock
        do throws(StoreError) {
            lock = try FileLock(path: paths.storeLock)
            try lock.lock(.shared)
        } catch {
            throw SnapshotError(error, while: what)
        }
        defer { lock.unlock() }
        return try body()
    }

    func snapshotTransaction<T>(_ what: String, _ body: () throws(StoreError) -> T) throws(SnapshotError) -> T {
        do throws(StoreError) { return try transaction(body) } catch { throw SnapshotError(error, while: what) }
    }

    /// The committed snapshot `name` ("" or nil: none).
    func committedParent(_ name: String?) throws(SnapshotError) -> StoredSnapshot? {
        guard let name, !name.isEmpty else { return nil }
        guard let parent = try snapshot(named: name) else {
            throw SnapshotError(.notFound, "parent snapshot \(name.debugDescription) does not exist")
        }
        guard parent.kind == .committed else {
            throw SnapshotError(.invalidArgument, "parent snapshot \(name.debugDescription) is \(parent.kind.rawValue), not committed")
        }
        return parent
    }

    /// The layers under a snapshot whose parent is `parent`, top first.
    func snapshotChain(_ parent: StoredSnapshot?) throws(SnapshotError) -> [Digest] {
        guard let top = parent?.chainID else { return [] }
        do throws(StoreError) {
            let byChain = Dictionary(uniqueKeysWithValues: try layers().map { ($0.chainID, $0) })
            return try Self.chain(of: top, in: byChain, path: paths.database).reversed()
        } catch {
            throw SnapshotError(error, while: "cannot read the layers of snapshot \(parent!.name.debugDescription)")
        }
    }

    /// Whether an image, container, snapshot or child layer uses the layer.
    func layerIsReferenced(_ chainID: Digest) throws(StoreError) -> Bool {
        try database { db throws(DatabaseError) in
            try db.query("""
                SELECT EXISTS (SELECT 1 FROM images WHERE top_chain_id = ?1)
                    OR EXISTS (SELECT 1 FROM containers WHERE chain_id = ?1)
                    OR EXISTS (SELECT 1 FROM snapshots WHERE chain_id = ?1)
                    OR EXISTS (SELECT 1 FROM layers WHERE parent = ?1)
                """, [chainID]) { (row) throws(DatabaseError) in try row.int64(0) != 0 }.first ?? true
        }
    }

    /// The row id the last INSERT on this connection made.
    func lastInsertedRowID() throws(StoreError) -> Int64 {
        try database { db throws(DatabaseError) in
            try db.query("SELECT last_insert_rowid()", []) { (row) throws(DatabaseError) in try row.int64(0) }.first ?? 0
        }
    }

    func makeLowerLinks(id: Int64, chain: [Digest]) throws(StoreError) {
        let dir = paths.snapshotLowerLinksDir(id)
        try Self.makeDir(dir, 0o700)
        for (index, chainID) in chain.enumerated() {
            let path = dir + "/\(index)"
            guard symlink("../../../layers/\(chainID.hex)/diff", path) == 0 else { throw .lastErrno(path: path, "cannot create link") }
        }
    }

    func ensureSnapshotsDirectory() throws(StoreError) {
        if mkdir(paths.snapshotsDir, 0o700) != 0 && errno != EEXIST {
            throw .lastErrno(path: paths.snapshotsDir, "cannot create directory")
        }
    }

    private func snapshotQuery(_ clause: String, _ values: [any SQLBindable], while what: String) throws(SnapshotError) -> [StoredSnapshot] {
        do throws(StoreError) {
            return try database { db throws(DatabaseError) in
                try db.query("""
                    SELECT s.id, s.name, s.kind, s.parent, p.name, s.chain_id, s.owns_layer, s.labels, s.created, s.updated
                    FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent
                    """ + " " + clause, values, Self.decodeSnapshot)
            }
        } catch {
            throw SnapshotError(error, while: what)
        }
    }

    static func decodeSnapshot(_ row: Row) throws(DatabaseError) -> StoredSnapshot {
        let kindText = try row.string(2)
        guard let kind = SnapshotKind(rawValue: kindText) else {
            throw DatabaseError(code: SQLITE_MISMATCH, message: "unknown snapshot kind \(kindText.debugDescription)",
                                sql: row.statementSQL, path: row.databasePath)
        }
        let labelsText = try row.string(7)
        guard let labels = try? JSONDecoder().decode([String: String].self, from: Data(labelsText.utf8)) else {
            throw DatabaseError(code: SQLITE_MISMATCH, message: "snapshot labels are not a JSON object of strings",
                                sql: row.statementSQL, path: row.databasePath)
        }
        return StoredSnapshot(id: try row.int64(0), name: try row.string(1), kind: kind, parentID: try row.optionalInt64(3),
                              parentName: try row.optionalString(4), chainID: try row.optionalDigest(5),
                              ownsLayer: try row.int64(6) != 0, labels: labels,
                              createdNanoseconds: try row.int64(8), updatedNanoseconds: try row.int64(9))
    }

    static func encodeLabels(_ labels: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(labels), as: UTF8.self)) ?? "{}"
    }

    /// A chainID for a layer whose diffID is not known (containerd applied it): sha256 of random
    /// bytes, so it can never be the chainID of an image's layer.
    static func localChainID() -> Digest {
        var rng = SystemRandomNumberGenerator()
        let nonce = Array("layertool snapshot ".utf8) + (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return Digest.sha256(of: nonce)
    }

    static func nowNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// Keys and names: not empty, at most 4096 bytes, no NUL.
    static func validateSnapshotName(_ name: String, what: String) throws(SnapshotError) {
        guard !name.isEmpty else { throw SnapshotError(.invalidArgument, "a snapshot \(what) cannot be empty") }
        guard name.utf8.count <= 4096 else { throw SnapshotError(.invalidArgument, "snapshot \(what) longer than 4096 bytes") }
        guard !name.utf8.contains(0) else { throw SnapshotError(.invalidArgument, "snapshot \(what) \(name.debugDescription) has a NUL byte") }
    }

    /// Labels as containerd bounds them: a key is not empty, key and value together at most 4096
    /// bytes; at most 256 labels.
    static func validateLabels(_ labels: [String: String]) throws(SnapshotError) {
        guard labels.count <= 256 else { throw SnapshotError(.invalidArgument, "\(labels.count) labels: at most 256") }
        for (key, value) in labels {
            guard !key.isEmpty else { throw SnapshotError(.invalidArgument, "a label key cannot be empty") }
            guard key.utf8.count + value.utf8.count <= 4096 else {
                throw SnapshotError(.invalidArgument, "label \(String(key.prefix(64)).debugDescription): key and value exceed 4096 bytes")
            }
        }
    }
}

extension StorePaths {
    /// `ROOT/snapshots`: one dir per active or view snapshot (containerd's, `layertool snapshotter`).
    public var snapshotsDir: String { root + "/snapshots" }
    /// `ROOT/snapshots/<id>`.
    public func snapshotDir(_ id: Int64) -> String { snapshotsDir + "/\(id)" }
    /// An active snapshot's overlay upper dir (its changes; the layer's files once committed).
    public func snapshotUpperDir(_ id: Int64) -> String { snapshotDir(id) + "/upper" }
    /// An active snapshot's overlay work dir.
    public func snapshotWorkDir(_ id: Int64) -> String { snapshotDir(id) + "/work" }
    /// The empty dir a view of nothing binds.
    public func snapshotEmptyDir(_ id: Int64) -> String { snapshotDir(id) + "/empty" }
    /// `ROOT/snapshots/<id>/lower/<n>`: links to the chain's diff dirs (`0` the top), for
    /// chains whose full paths would not fit in one page of mount data.
    public func snapshotLowerLinksDir(_ id: Int64) -> String { snapshotDir(id) + "/lower" }
}
