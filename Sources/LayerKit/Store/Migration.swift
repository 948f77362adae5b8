import CSQLite
import Foundation

/// One step of a database's schema history. Steps are numbered from 1 without gaps and never
/// change once released: a new schema is a new step.
struct Migration: Sendable {
    /// The schema version this step produces (`PRAGMA user_version` after it).
    let version: Int
    /// A short name, kept in `schema_migrations`.
    let name: String
    /// The statements of the step.
    let sql: String
}

extension Database {
    /// The schema version recorded in the database header (0 for a new database).
    func schemaVersion() throws(DatabaseError) -> Int {
        try query("PRAGMA user_version") { (row) throws(DatabaseError) in try row.int(0) }.first ?? 0
    }

    /// Brings the schema up to the last of `migrations`, one transaction per step: each step's
    /// statements, its row in `schema_migrations` and the new `user_version` commit together, so a
    /// crash leaves the database at one version or the next. Processes migrating at once are
    /// serialized by the write lock; each re-reads the version inside its transaction and skips
    /// steps already applied. A database newer than the last step is refused.
    ///
    /// - Returns: the versions applied by this call.
    @discardableResult
    func migrate(_ migrations: [Migration]) throws(DatabaseError) -> [Int] {
        for (i, m) in migrations.enumerated() where m.version != i + 1 {
            throw DatabaseError(code: SQLITE_MISUSE, message: "migration \(m.name) has version \(m.version), expected \(i + 1)", sql: nil, path: path)
        }
        let latest = migrations.count
        let found = try schemaVersion()
        if found > latest {
            throw DatabaseError(code: SQLITE_ERROR,
                                message: "schema version \(found) is newer than this program knows (\(latest)): written by a newer version",
                                sql: nil, path: path)
        }
        var applied = [Int]()
        for m in migrations where m.version > found {
            let ran = try transaction { () throws(DatabaseError) -> Bool in
                let current = try schemaVersion()
                guard current < m.version else { return false }
                guard current == m.version - 1 else {
                    throw DatabaseError(code: SQLITE_ERROR, message: "schema version \(current) cannot take migration \(m.version)", sql: nil, path: path)
                }
                try executeScript("""
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version INTEGER PRIMARY KEY,
                        name    TEXT    NOT NULL,
                        applied INTEGER NOT NULL
                    )
                    """)
                try executeScript(m.sql)
                try execute("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                            m.version, m.name, Int64(Date().timeIntervalSince1970))
                // PRAGMA takes no parameters; the version is an Int, so this is not injectable.
                try execute("PRAGMA user_version = \(m.version)")
                return true
            }
            if ran { applied.append(m.version) }
        }
        return applied
    }
}
