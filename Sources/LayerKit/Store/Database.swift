import CSQLite
import Foundation

/// A connection to an SQLite database, set up for a store that several processes share:
/// WAL journal (readers never wait for the writer), a busy timeout (writers wait for each other
/// instead of failing), foreign keys enforced, and `synchronous=FULL` (a committed transaction
/// is on disk before `COMMIT` returns, so file system changes made after it can rely on it).
///
/// Not thread-safe: one connection per thread (or per `LayerStore`). Closed when released.
final class Database {
    /// The database file.
    let path: String
    let handle: OpaquePointer

    /// Opens (creating if needed) the database at `path`.
    /// - Parameter busyTimeout: how long a statement waits for another connection's lock, in
    ///   milliseconds, before failing with `SQLITE_BUSY`.
    init(path: String, busyTimeout: Int32 = 30_000) throws(DatabaseError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            if let db { sqlite3_close_v2(db) }
            throw DatabaseError(code: rc, message: message, sql: nil, path: path)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeout)
        // The first switch to WAL takes an exclusive lock; a process opening the same new file at
        // that moment may see SQLITE_BUSY even with the busy handler. It retries.
        var attempts = 0
        while true {
            do throws(DatabaseError) {
                let mode = try query("PRAGMA journal_mode = WAL") { (row) throws(DatabaseError) in try row.string(0) }
                guard mode.first?.lowercased() == "wal" else {
                    throw DatabaseError(code: SQLITE_ERROR, message: "cannot switch to WAL mode (journal mode is \(mode.first ?? "?"))",
                                        sql: "PRAGMA journal_mode = WAL", path: path)
                }
                break
            } catch where error.isBusy && attempts < 100 {
                attempts += 1
                usleep(50_000)
            }
        }
        try execute("PRAGMA foreign_keys = ON")
        try execute("PRAGMA synchronous = FULL")
        let fk = try query("PRAGMA foreign_keys") { (row) throws(DatabaseError) in try row.int64(0) }
        guard fk.first == 1 else {
            throw DatabaseError(code: SQLITE_ERROR, message: "this SQLite does not enforce foreign keys", sql: "PRAGMA foreign_keys", path: path)
        }
    }

    deinit { sqlite3_close_v2(handle) }

    /// Compiles one statement.
    func prepare(_ sql: String) throws(DatabaseError) -> Statement { try Statement(self, sql) }

    /// Runs one statement to completion, discarding any rows.
    func execute(_ sql: String, _ values: any SQLBindable...) throws(DatabaseError) {
        try execute(sql, values)
    }

    /// Runs one statement to completion with these parameter values, discarding any rows.
    func execute(_ sql: String, _ values: [any SQLBindable]) throws(DatabaseError) {
        let statement = try prepare(sql)
        try statement.bind(values)
        while try statement.step() != nil {}
    }

    /// Runs SQL text that may hold several statements and no parameters (a migration step).
    func executeScript(_ sql: String) throws(DatabaseError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        guard rc == SQLITE_OK else {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw DatabaseError(code: sqlite3_extended_errcode(handle), message: text, sql: sql, path: path)
        }
    }

    /// Runs a query and maps each row; `map` may throw the caller's own error type.
    func query<T, E: DatabaseErrorConvertible>(_ sql: String, _ values: [any SQLBindable] = [],
                                               _ map: (Row) throws(E) -> T) throws(E) -> [T] {
        var rows = [T]()
        let statement: Statement
        do throws(DatabaseError) {
            statement = try prepare(sql)
            try statement.bind(values)
        } catch { throw E(error) }
        while true {
            let row: Row?
            do throws(DatabaseError) { row = try statement.step() } catch { throw E(error) }
            guard let row else { break }
            rows.append(try map(row))
        }
        return rows
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE on this connection.
    var changes: Int { Int(sqlite3_changes(handle)) }

    /// Whether a transaction is open on this connection.
    var inTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// Runs `body` in a write transaction: `BEGIN IMMEDIATE` (the write lock is taken at once,
    /// waiting up to the busy timeout, so the transaction cannot fail later for lack of it),
    /// `COMMIT` when `body` returns, `ROLLBACK` when it throws or the commit fails. Not nestable.
    func transaction<T, E: DatabaseErrorConvertible>(_ body: () throws(E) -> T) throws(E) -> T {
        guard !inTransaction else {
            throw E(DatabaseError(code: SQLITE_MISUSE, message: "a transaction is already open on this connection", sql: nil, path: path))
        }
        do throws(DatabaseError) { try execute("BEGIN IMMEDIATE") } catch { throw E(error) }
        let value: T
        do throws(E) {
            value = try body()
        } catch {
            rollback()
            throw error
        }
        do throws(DatabaseError) { try execute("COMMIT") } catch {
            rollback()
            throw E(error)
        }
        return value
    }

    private func rollback() {
        // After some errors (SQLITE_FULL, SQLITE_IOERR...) SQLite has already rolled back.
        if inTransaction { sqlite3_exec(handle, "ROLLBACK", nil, nil, nil) }
    }

    /// The error for result code `rc`, with SQLite's message for this connection.
    func error(_ rc: Int32, sql: String?) -> DatabaseError {
        let code = sqlite3_extended_errcode(handle)
        let message = String(cString: sqlite3_errmsg(handle))
        return DatabaseError(code: code & 0xFF == rc & 0xFF ? code : rc, message: message, sql: sql, path: path)
    }
}
