import CSQLite
import Foundation
import Logging
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A layer store: images unpacked layer by layer into overlayfs-ready directories, shared between
/// images by chainID, with their records in SQLite (see `StorePaths` for the layout).
///
/// Crash safety: a layer's directory is complete and synced before it is renamed into
/// `layers/`, and its record is written only after that, so a record always names a complete
/// layer. Whatever a crash leaves without a record (staging dirs, renamed but unrecorded layer
/// dirs, short links to them, dirs of layers gc had dropped) is removed the next time the store
/// is opened while no other process is using it, or by the next gc.
///
/// Concurrency: processes share the store. Imports hold `locks/store.lock` shared and each
/// layer's `locks/<chainID>.lock` exclusively from "is it there?" to "it is recorded", so two
/// imports of one layer unpack it once. Garbage collection and cleanup hold `store.lock`
/// exclusively: they never run while an import is in progress. Within a process a `LayerStore`
/// is safe to share between threads and tasks: its one SQLite connection is used under a lock,
/// and every operation takes its file locks on descriptors of its own.
///
/// Hostile stores: the root and its dirs must be real directories (not symlinks) that no user
/// but the store's owner can write; a store that is not is refused when opened.
public final class LayerStore: @unchecked Sendable {
    /// Settings of an opened store.
    public struct Configuration: Sendable {
        /// For a new store, the namespace of overlay xattrs; defaults to `trusted` for root (in the
        /// initial user namespace) and `user` otherwise. Ignored for an existing store.
        public var overlayNamespace: OverlayXattrNamespace?
        /// How containers are mounted (mount(2) forced, to exercise the fallback).
        public var mountOptions: OverlayMounter.Options
        /// The gzip decoder for imports.
        public var gzipDecoder: GzipDecoderKind
        /// Threads that create small files while a layer is imported (`ApplyOptions.applyWorkers`).
        public var applyWorkers: Int = ApplyOptions.defaultApplyWorkers
        /// Where warnings go (what opening cleaned up, xattrs a file system refused, stale mounts).
        public var logger: Logger

        public init(overlayNamespace: OverlayXattrNamespace? = nil, mountOptions: OverlayMounter.Options = .init(),
                    gzipDecoder: GzipDecoderKind = .isal, logger: Logger = .discarding) {
            self.overlayNamespace = overlayNamespace
            self.mountOptions = mountOptions
            self.gzipDecoder = gzipDecoder
            self.logger = logger
        }
    }

    /// Where everything is.
    public let paths: StorePaths
    /// The xattr namespace of the overlay markers in this store's layers (`trusted` when the
    /// store was created by root, `user` otherwise); fixed when the store is created.
    public let overlayNamespace: OverlayXattrNamespace
    /// What opening the store cleaned up (set once, while it is opened).
    public private(set) var openingCleanup = StoreCleanup()
    /// The settings it was opened with.
    public let configuration: Configuration

    /// The connection, used only under `connectionLock`.
    private let connection: Database
    private let connectionLock = RecursiveLock()

    /// The store root.
    public var root: String { paths.root }

    /// Opens the store at `root`, creating it if needed, migrating its schema, and cleaning up
    /// after crashes when no other process is using it.
    public init(root: String, configuration: Configuration = Configuration()) throws(StoreError) {
        // Absolute, so lower-dir lists and mount data built from it do not depend on the cwd.
        let absolute = StorePaths(root: root.hasPrefix("/") ? root : FileManager.default.currentDirectoryPath + "/" + root)
        try Self.createDirectories(absolute)
        // Canonical (no symlinks, no `//`), as the kernel shows the upper dirs in mountinfo.
        let paths = StorePaths(root: MountTable.resolve(absolute.root))
        try Self.checkOwnership(paths)
        self.paths = paths
        self.configuration = configuration
        try Self.checkDatabaseFiles(paths)
        let connection: Database
        do throws(DatabaseError) { connection = try Database(path: paths.database) } catch { throw StoreError(error) }
        self.connection = connection
        let found = try Self.run(connection) { db throws(DatabaseError) in try db.schemaVersion() }
        guard found <= StoreSchema.latestVersion else {
            throw StoreError(.incompatible, path: paths.database,
                             "schema version \(found) is newer than this program knows (\(StoreSchema.latestVersion)): the store was written by a newer layertool")
        }
        _ = try Self.run(connection) { db throws(DatabaseError) in try db.migrate(StoreSchema.migrations) }
        // trusted.* needs CAP_SYS_ADMIN in the initial user namespace: root inside a user
        // namespace (rootless runtimes) gets the user.* form, which overlayfs reads with userxattr.
        let wanted = configuration.overlayNamespace ?? (geteuid() == 0 && Self.inInitialUserNamespace ? .trusted : .user)
        let key = "overlay_xattr_namespace"
        let stored: String = try Self.run(connection) { db throws(DatabaseError) in
            try db.execute("INSERT OR IGNORE INTO store_settings (key, value) VALUES (?, ?)", key, wanted.rawValue)
            return try db.query("SELECT value FROM store_settings WHERE key = ?", [key]) { (row) throws(DatabaseError) in
                try row.string(0)
            }.first ?? wanted.rawValue
        }
        guard let namespace = OverlayXattrNamespace(rawValue: stored) else {
            throw StoreError(.incompatible, path: paths.database, "unknown overlay xattr namespace \(String(stored.prefix(64)).debugDescription)")
        }
        self.overlayNamespace = namespace
        self.openingCleanup = try cleanUpIfIdle()
        if !openingCleanup.isEmpty {
            configuration.logger.info("opening the store cleaned up after a crash", metadata: ["cleanup": "\(openingCleanup)"])
        }
    }

    /// Whether this process runs in the initial user namespace (its uid map is the identity
    /// over all ids), where root may set `trusted.*` xattrs and mount overlayfs without userxattr.
    public static var inInitialUserNamespace: Bool {
        guard let map = try? String(contentsOfFile: "/proc/self/uid_map", encoding: .utf8) else { return true }
        let fields = map.split(whereSeparator: { $0 == " " || $0 == "\n" })
        return fields.count == 3 && fields[0] == "0" && fields[1] == "0" && fields[2] == "4294967295"
    }

    /// Whether a store has been created at `root`.
    public static func exists(at root: String) -> Bool {
        access(StorePaths(root: root).database, F_OK) == 0
    }

    // MARK: Records

    /// Every layer, ordered by chainID.
    public func layers() throws(StoreError) -> [StoredLayer] {
        try database { db throws(DatabaseError) in
            try db.query("SELECT \(Self.layerColumns) FROM layers ORDER BY chain_id", [], Self.decodeLayer)
        }
    }

    /// The layer with this chainID, or nil.
    public func layer(_ chainID: Digest) throws(StoreError) -> StoredLayer? {
        try database { db throws(DatabaseError) in
            try db.query("SELECT \(Self.layerColumns) FROM layers WHERE chain_id = ?", [chainID], Self.decodeLayer).first
        }
    }

    /// Every image, ordered by name, with its layers and size.
    public func images() throws(StoreError) -> [StoredImage] {
        try images(where: nil)
    }

    /// The image named `name`, or nil.
    public func image(named name: String) throws(StoreError) -> StoredImage? {
        try images(where: name).first
    }

    /// Every container record, oldest first.
    public func containers() throws(StoreError) -> [StoredContainer] {
        try database { db throws(DatabaseError) in
            try db.query("SELECT \(Self.containerColumns) FROM containers ORDER BY created, id", [], Self.decodeContainer)
        }
    }

    /// Removes image records (not their layers: `collectGarbage` removes layers no longer used).
    /// All or nothing: if one name is unknown, none is removed. A name given twice counts once.
    public func removeImages(_ names: [String]) throws(StoreError) {
        var seen = Set<String>()
        let unique = names.filter { seen.insert($0).inserted }
        try transaction { () throws(StoreError) in
            for name in unique {
                try execute("DELETE FROM images WHERE name = ?", [name])
                guard try database({ db throws(DatabaseError) in db.changes }) == 1 else {
                    throw StoreError(.notFound, "no image named \(name.debugDescription)")
                }
            }
        }
    }

    /// Checks an image name: not empty, at most 255 bytes, no control characters.
    public static func validateName(_ name: String) throws(StoreError) {
        guard !name.isEmpty else { throw StoreError(.invalidArgument, "an image name cannot be empty") }
        guard name.utf8.count <= 255 else { throw StoreError(.invalidArgument, "image name longer than 255 bytes") }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw StoreError(.invalidArgument, "image name \(name.debugDescription) has control characters")
        }
    }

    // MARK: Internals

    private func images(where name: String?) throws(StoreError) -> [StoredImage] {
        let byChain = Dictionary(uniqueKeysWithValues: try layers().map { ($0.chainID, $0) })
        let sql = "SELECT name, manifest_digest, config_digest, top_chain_id, created FROM images"
            + (name == nil ? " ORDER BY name" : " WHERE name = ?")
        let rows = try database { db throws(DatabaseError) in
            try db.query(sql, name.map { [$0] } ?? []) { (row) throws(DatabaseError) in
                (try row.string(0), try row.digest(1), try row.digest(2), try row.optionalDigest(3), try row.date(4))
            }
        }
        var result = [StoredImage]()
        for (name, manifest, config, top, created) in rows {
            let chain = try Self.chain(of: top, in: byChain, path: paths.database)
            // Saturating: sizes are bounded per record, not the length of a chain.
            let size = chain.reduce(Int64(0)) { total, id in
                let (sum, overflow) = total.addingReportingOverflow(byChain[id]?.size ?? 0)
                return overflow ? .max : sum
            }
            result.append(StoredImage(name: name, manifestDigest: manifest, configDigest: config, topChainID: top,
                                      chainIDs: chain, size: size, created: created))
        }
        return result
    }

    /// The chain of `top`, bottom first, following parent links.
    static func chain(of top: Digest?, in layers: [Digest: StoredLayer], path: String) throws(StoreError) -> [Digest] {
        var chain = [Digest]()
        var next = top
        while let id = next {
            guard let layer = layers[id] else {
                throw StoreError(.incompatible, path: path, "layer \(id) is referenced but has no record")
            }
            chain.append(id)
            guard chain.count <= layers.count else { throw StoreError(.incompatible, path: path, "the parent links of \(top!) form a cycle") }
            next = layer.parent
        }
        return chain.reversed()
    }

    static let containerColumns = "id, image, chain_id, driver, mountpoint, state, created, read_only, volatile, daemon_pid"

    static func decodeContainer(_ row: Row) throws(DatabaseError) -> StoredContainer {
        StoredContainer(id: try row.string(0), image: try row.optionalString(1), chainID: try row.optionalDigest(2),
                        driver: try row.enumeration(3), mountpoint: try row.optionalString(4), state: try row.enumeration(5),
                        created: try row.date(6), readOnly: try row.int64(7) != 0, volatile: try row.int64(8) != 0,
                        daemonPID: try row.optionalInt64(9).map { Int32(truncatingIfNeeded: $0) })
    }

    static let layerColumns = "chain_id, diff_id, blob_digest, blob_size, media_type, parent, link, size, created"

    static func decodeLayer(_ row: Row) throws(DatabaseError) -> StoredLayer {
        StoredLayer(chainID: try row.digest(0), diffID: try row.digest(1), blobDigest: try row.optionalDigest(2),
                    blobSize: try row.optionalByteCount(3), mediaType: try row.optionalString(4), parent: try row.optionalDigest(5),
                    link: try row.string(6), size: try row.byteCount(7), created: try row.date(8))
    }

    /// Runs database work on the connection (under its lock), turning its errors into store errors.
    func database<T>(_ body: (Database) throws(DatabaseError) -> T) throws(StoreError) -> T {
        try connectionLock.withLock { () throws(StoreError) -> T in try Self.run(connection, body) }
    }

    /// Runs `body` on the connection under its lock, its errors as they are (for tests that check
    /// what the database itself refuses).
    func withConnection<T>(_ body: (Database) throws(DatabaseError) -> T) throws(DatabaseError) -> T {
        try connectionLock.withLock { () throws(DatabaseError) -> T in try body(connection) }
    }

    /// Runs one statement, turning its errors into store errors.
    func execute(_ sql: String, _ values: [any SQLBindable]) throws(StoreError) {
        try database { db throws(DatabaseError) in try db.execute(sql, values) }
    }

    /// Runs `body` in one write transaction, holding the connection for its whole length.
    func transaction<T>(_ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        try connectionLock.withLock { () throws(StoreError) -> T in try connection.transaction(body) }
    }

    private static func run<T>(_ db: Database, _ body: (Database) throws(DatabaseError) -> T) throws(StoreError) -> T {
        do throws(DatabaseError) { return try body(db) } catch { throw StoreError(error) }
    }

    /// Runs `body` holding `locks/store.lock` (on a descriptor of its own: flock locks belong to
    /// open file descriptions, so two operations of this process never share one).
    func withStoreLock<T>(_ mode: FileLock.Mode, _ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        let lock = try FileLock(path: paths.storeLock)
        try lock.lock(mode)
        defer { lock.unlock() }
        return try body()
    }

    private static func createDirectories(_ paths: StorePaths) throws(StoreError) {
        var st = stat()
        if lstat(paths.root, &st) == 0 {
            guard FileSystem.isDirectory(st) else { throw StoreError(.incompatible, path: paths.root, "the store root exists and is not a directory") }
        } else {
            // Missing parents are made (0755), as `mkdir -p` would: the default root is often
            // below a `~/.local/share` that does not exist yet.
            var missing = [String]()
            var dir = FileSystem.split(paths.root).dir
            while lstat(dir, &st) != 0 && errno == ENOENT && dir != "/" {
                missing.append(dir)
                dir = FileSystem.split(dir).dir
            }
            for parent in missing.reversed() where mkdir(parent, 0o755) != 0 && errno != EEXIST {
                throw .lastErrno(path: parent, "cannot create the store's parent directory")
            }
            try makeDirectory(paths.root)
        }
        // 0700: layers hold image files as they are (setuid binaries included); no one but the
        // store's owner should reach them except through a mount. Each is made in its parent
        // opened through real dirs only: an own dir replaced by a symlink (`blobs -> elsewhere`)
        // must not get `sha256` made at the other end; `checkOwnership` then refuses the symlink.
        let rootFD = open(paths.root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard rootFD >= 0 else { throw .lastErrno(path: paths.root, "cannot open the store") }
        defer { close(rootFD) }
        for dir in paths.ownDirectories {
            let (parent, name) = FileSystem.split(String(dir.dropFirst(paths.root.count + 1)))
            let parentFD = parent == "." ? rootFD : FileSystem.openBeneath(rootFD, Array(parent.utf8))
            guard parentFD >= 0 else { continue }
            defer { if parentFD != rootFD { close(parentFD) } }
            if mkdirat(parentFD, name, 0o700) != 0 && errno != EEXIST {
                throw .lastErrno(path: dir, "cannot create directory")
            }
        }
    }

    /// Refuses a database, WAL, shared-memory or journal file that exists and is not a regular
    /// file: SQLite opens them by name, and would wait forever on a fifo put there.
    private static func checkDatabaseFiles(_ paths: StorePaths) throws(StoreError) {
        for path in [paths.database, paths.database + "-wal", paths.database + "-shm", paths.database + "-journal"] {
            var st = stat()
            if lstat(path, &st) != 0 {
                if errno == ENOENT { continue }
                throw .lastErrno(path: path, "cannot open the store")
            }
            guard FileSystem.isRegularFile(st) else {
                throw StoreError(.incompatible, path: path, "a store database file is not a regular file: refusing to open it (the store may have been tampered with)")
            }
        }
    }

    private static func makeDirectory(_ path: String) throws(StoreError) {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw .lastErrno(path: path, "cannot create directory")
        }
    }

    /// Refuses a store whose root or own dirs are symlinks, not dirs, or writable by a user other
    /// than the root's owner: whoever can write there can make the store delete or read files
    /// anywhere its owner can.
    private static func checkOwnership(_ paths: StorePaths) throws(StoreError) {
        var rootStat = stat()
        guard lstat(paths.root, &rootStat) == 0 else { throw .lastErrno(path: paths.root, "cannot open the store") }
        for dir in [paths.root] + paths.ownDirectories {
            var st = stat()
            guard lstat(dir, &st) == 0 else { throw .lastErrno(path: dir, "cannot open the store") }
            guard FileSystem.isDirectory(st) else {
                throw StoreError(.incompatible, path: dir, FileSystem.isSymlink(st)
                                 ? "a store directory is a symlink: refusing to use it (the store may have been tampered with)"
                                 : "a store directory is not a directory")
            }
            guard st.st_uid == rootStat.st_uid, st.st_mode & 0o022 == 0 else {
                throw StoreError(.incompatible, path: dir, "writable by another user than the store's owner (uid \(rootStat.st_uid)): refusing to use it")
            }
        }
    }
}

extension Digest: SQLBindable {
    var sqlValue: SQLValue { .text(description) }
}

extension ContainerState: SQLBindable {
    var sqlValue: SQLValue { .text(rawValue) }
}

extension MountDriver: SQLBindable {
    var sqlValue: SQLValue { .text(rawValue) }
}

extension Row {
    func digest(_ index: Int32) throws(DatabaseError) -> Digest {
        let text = try string(index)
        do { return try Digest(parsing: text) } catch {
            throw DatabaseError(code: SQLITE_MISMATCH, message: "column \(name(index)): \(error.description)",
                                sql: statementSQL, path: databasePath)
        }
    }

    func optionalDigest(_ index: Int32) throws(DatabaseError) -> Digest? {
        isNull(index) ? nil : try digest(index)
    }

    /// A value stored as its enum's raw text.
    func enumeration<T: RawRepresentable>(_ index: Int32) throws(DatabaseError) -> T where T.RawValue == String {
        let text = try string(index)
        guard let value = T(rawValue: text) else {
            throw DatabaseError(code: SQLITE_MISMATCH, message: "column \(name(index)): unknown value \(text.debugDescription)",
                                sql: statementSQL, path: databasePath)
        }
        return value
    }

    /// A time stored as seconds since the epoch.
    func date(_ index: Int32) throws(DatabaseError) -> Date {
        Date(timeIntervalSince1970: TimeInterval(try int64(index)))
    }
}
