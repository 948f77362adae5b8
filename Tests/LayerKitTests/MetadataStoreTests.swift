import CSQLite
import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

// The store's SQLite wrapper (typed binding, errors, transactions, migrations) and the store's
// schema, settings and paths: no root needed.

@Suite struct MetadataStoreTests {
    @Test func opensInWALModeWithForeignKeys() throws {
        let tmp = TempDir()
        let db = try Database(path: tmp.sub("x.db"))
        #expect(try db.query("PRAGMA journal_mode", []) { (row) throws(DatabaseError) in try row.string(0) } == ["wal"])
        #expect(try db.query("PRAGMA foreign_keys", []) { (row) throws(DatabaseError) in try row.int(0) } == [1])
        #expect(try db.query("PRAGMA synchronous", []) { (row) throws(DatabaseError) in try row.int(0) } == [2])
    }

    @Test func typedBindingRoundTrips() throws {
        let tmp = TempDir()
        let db = try Database(path: tmp.sub("x.db"))
        try db.execute("CREATE TABLE t (i INTEGER, s TEXT, b BLOB, r REAL, n TEXT)")
        let text = "it's \"quoted\"; DROP TABLE t; -- é ☃"
        let digest = LayerKit.Digest.sha256(of: Array("x".utf8))
        try db.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", Int64.max, text, [UInt8]([0, 1, 255]), 1.5, Optional<String>.none)
        try db.execute("INSERT INTO t VALUES (?, ?, NULL, NULL, ?)", -1, digest, Optional("set"))
        let rows = try db.query("SELECT i, s, b, r, n FROM t ORDER BY i DESC", []) { (row) throws(DatabaseError) in
            (try row.int64(0), try row.string(1), row.value(2), row.value(3), try row.optionalString(4))
        }
        #expect(rows.count == 2)
        #expect(rows[0].0 == Int64.max && rows[0].1 == text && rows[0].2 == .blob([0, 1, 255]) && rows[0].3 == .real(1.5) && rows[0].4 == nil)
        #expect(rows[1].0 == -1 && rows[1].1 == digest.description && rows[1].4 == "set")
        #expect(try db.query("SELECT s FROM t WHERE i = -1", []) { (row) throws(DatabaseError) in try row.digest(0) } == [digest])

        // Type checks: NULL is not a string, text is not an integer.
        #expect(throws: DatabaseError.self) { try db.query("SELECT n FROM t WHERE i = ?", [Int64.max]) { (row) throws(DatabaseError) in try row.string(0) } }
        do {
            _ = try db.query("SELECT s FROM t", []) { (row) throws(DatabaseError) in try row.int64(0) }
            Issue.record("text read as an integer")
        } catch {
            #expect(error.code == SQLITE_MISMATCH && error.sql == "SELECT s FROM t" && error.message.contains("column s"))
        }
        // Parameter count is checked.
        #expect(throws: DatabaseError.self) { try db.execute("INSERT INTO t (i) VALUES (?)", 1, 2) }
    }

    @Test func errorsCarryTheSQLAndSQLitesMessage() throws {
        let tmp = TempDir()
        let path = tmp.sub("x.db")
        let db = try Database(path: path)
        do {
            try db.execute("SELEKT 1")
            Issue.record("bad SQL accepted")
        } catch {
            #expect(error.sql == "SELEKT 1")
            #expect(error.message.contains("syntax error"))
            #expect(error.path == path)
            #expect(error.description.hasPrefix(path + ": ") && error.description.contains("in \"SELEKT 1\""))
        }
        try db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        try db.execute("INSERT INTO t VALUES ('a')")
        do {
            try db.execute("INSERT INTO t VALUES (?)", "a")
            Issue.record("duplicate key accepted")
        } catch {
            #expect(error.isConstraintViolation)
            #expect(error.code == SQLITE_CONSTRAINT | (6 << 8))
            #expect(error.description.contains("SQLITE_CONSTRAINT_PRIMARYKEY") && error.description.contains("UNIQUE constraint failed: t.k"))
        }
        #expect(throws: DatabaseError.self) { _ = try db.prepare("SELECT 1; SELECT 2") }
    }

    struct Boom: Error, DatabaseErrorConvertible {
        var database: DatabaseError?
        init() {}
        init(_ error: DatabaseError) { database = error }
    }

    @Test func transactionsCommitOrRollBack() throws {
        let tmp = TempDir()
        let db = try Database(path: tmp.sub("x.db"))
        try db.execute("CREATE TABLE t (v INTEGER)")
        try db.transaction { () throws(DatabaseError) in
            try db.execute("INSERT INTO t VALUES (1)")
            try db.execute("INSERT INTO t VALUES (2)")
        }
        #expect(throws: Boom.self) {
            try db.transaction { () throws(Boom) in
                do throws(DatabaseError) { try db.execute("INSERT INTO t VALUES (3)") } catch { throw Boom(error) }
                throw Boom()
            }
        }
        #expect(!db.inTransaction)
        // A failing statement inside rolls back the statements before it.
        #expect(throws: DatabaseError.self) {
            try db.transaction { () throws(DatabaseError) in
                try db.execute("INSERT INTO t VALUES (4)")
                try db.execute("INSERT INTO nowhere VALUES (5)")
            }
        }
        #expect(try db.query("SELECT v FROM t ORDER BY v", []) { (row) throws(DatabaseError) in try row.int(0) } == [1, 2])
        // Not nestable.
        #expect(throws: DatabaseError.self) {
            try db.transaction { () throws(DatabaseError) in try db.transaction { () throws(DatabaseError) in } }
        }
        // A second connection waits for the write lock rather than failing (busy timeout).
        let other = try Database(path: tmp.sub("x.db"), busyTimeout: 5_000)
        try db.execute("BEGIN IMMEDIATE")
        let released = Date().addingTimeInterval(0.3)
        nonisolated(unsafe) let holder = db
        let thread = Thread { usleep(300_000); try? holder.execute("COMMIT") }
        thread.start()
        try other.transaction { () throws(DatabaseError) in try other.execute("INSERT INTO t VALUES (9)") }
        #expect(Date() >= released.addingTimeInterval(-0.05))
        #expect(try other.query("SELECT count(*) FROM t", []) { (row) throws(DatabaseError) in try row.int(0) } == [3])
    }

    @Test func migrationsApplyInOrderOnceAndRollBackAFailingStep() throws {
        let tmp = TempDir()
        let path = tmp.sub("x.db")
        let steps = [
            Migration(version: 1, name: "one", sql: "CREATE TABLE a (x INTEGER);"),
            Migration(version: 2, name: "two", sql: "ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z INTEGER);"),
        ]
        let db = try Database(path: path)
        #expect(try db.schemaVersion() == 0)
        #expect(try db.migrate(Array(steps.prefix(1))) == [1])
        #expect(try db.migrate(steps) == [2])
        #expect(try db.migrate(steps) == [])
        #expect(try db.schemaVersion() == 2)
        #expect(try db.query("SELECT version, name FROM schema_migrations ORDER BY version", []) { (row) throws(DatabaseError) in
            "\(try row.int(0)) \(try row.string(1))"
        } == ["1 one", "2 two"])

        let broken = steps + [Migration(version: 3, name: "three", sql: "CREATE TABLE c (v INTEGER); INSERT INTO nowhere VALUES (1);")]
        #expect(throws: DatabaseError.self) { try db.migrate(broken) }
        #expect(try db.schemaVersion() == 2, "a failed step leaves the previous version")
        #expect(try db.query("SELECT name FROM sqlite_master WHERE name = 'c'", []) { (row) throws(DatabaseError) in try row.string(0) }.isEmpty)

        let gap = [Migration(version: 2, name: "gap", sql: "")]
        #expect(throws: DatabaseError.self) { try db.migrate(gap) }
        // A database from the future is refused.
        #expect(throws: DatabaseError.self) { try db.migrate(Array(steps.prefix(1))) }
    }

    @Test func aStoreWithANewerSchemaIsRefused() throws {
        let tmp = TempDir()
        let root = tmp.sub("store")
        _ = try LayerStore(root: root, configuration: .init(overlayNamespace: .user))
        try Database(path: StorePaths(root: root).database).execute("PRAGMA user_version = 99")
        do {
            _ = try LayerStore(root: root)
            Issue.record("a newer schema was accepted")
        } catch {
            #expect(error.kind == .incompatible)
            #expect(error.description.contains("schema version 99") && error.description.contains("metadata.db"))
        }
    }

    @Test func theStoreSchemaIsCreatedAndRecorded() throws {
        let tmp = TempDir()
        let store = try LayerStore(root: tmp.sub("store"), configuration: .init(overlayNamespace: .user))
        #expect(store.overlayNamespace == .user)
        #expect(try store.withConnection { (db) throws(DatabaseError) in try db.schemaVersion() } == StoreSchema.latestVersion)
        let tables = try store.withConnection { (db) throws(DatabaseError) in
            try db.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name", []) { (row) throws(DatabaseError) in try row.string(0) }
        }
        #expect(tables == ["containers", "images", "layers", "schema_migrations", "snapshots", "sqlite_sequence", "store_settings"])
        for dir in ["layers", "l", "staging", "locks", "blobs/sha256", "containers", "snapshots"] {
            #expect(lstatOrNil(store.root + "/" + dir).map { $0.st_mode & 0o7777 } == 0o700, "\(dir)")
        }
        // The namespace is fixed at creation.
        #expect(try LayerStore(root: store.root, configuration: .init(overlayNamespace: .trusted)).overlayNamespace == .user)
    }

    @Test func defaultRoots() {
        #expect(StorePaths.defaultRoot(environment: [:], isRoot: true) == "/var/lib/layertool")
        #expect(StorePaths.defaultRoot(environment: ["XDG_DATA_HOME": "/x/data", "HOME": "/home/u"], isRoot: false) == "/x/data/layertool")
        #expect(StorePaths.defaultRoot(environment: ["HOME": "/home/u"], isRoot: false) == "/home/u/.local/share/layertool")
        #expect(StorePaths.defaultRoot(environment: ["XDG_DATA_HOME": "relative", "HOME": "/home/u"], isRoot: false) == "/home/u/.local/share/layertool")
    }

    @Test func shortLinksAreOverlay2Style() {
        let names = (0..<200).map { _ in ShortLink.generate() }
        #expect(Set(names).count == 200)
        #expect(names.allSatisfy(ShortLink.isValid))
        #expect(!ShortLink.isValid("abcdefghijklmnopqrstuvwxyz"))
        #expect(!ShortLink.isValid("AAAA"))
    }
}
