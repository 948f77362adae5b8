import Foundation
import CSQLite

/// An SQLite call that failed: the database file, the SQL being run, SQLite's result code and
/// its message.
///
/// `description` is one line: `ROOT/metadata.db: FOREIGN KEY constraint failed
/// (SQLITE_CONSTRAINT_FOREIGNKEY) in "DELETE FROM layers WHERE chain_id = ?"`.
public struct DatabaseError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The extended result code (`SQLITE_BUSY`, `SQLITE_CONSTRAINT_FOREIGNKEY`, ...).
    public let code: Int32
    /// SQLite's message for the failure (`sqlite3_errmsg`), or ours for misuse of the wrapper.
    public let message: String
    /// The statement that failed, when the failure came from one.
    public let sql: String?
    /// The database file.
    public let path: String

    public init(code: Int32, message: String, sql: String?, path: String) {
        self.code = code
        self.message = message
        self.sql = sql
        self.path = path
    }

    /// The primary result code (`code` without its extended bits).
    public var primaryCode: Int32 { code & 0xFF }

    /// The database was locked by another connection for longer than the busy timeout.
    public var isBusy: Bool { primaryCode == SQLITE_BUSY || primaryCode == SQLITE_LOCKED }

    /// A constraint (primary key, foreign key, NOT NULL, UNIQUE, CHECK) refused the change.
    public var isConstraintViolation: Bool { primaryCode == SQLITE_CONSTRAINT }

    public var description: String {
        var text = "\(path): \(message) (\(Self.codeName(code)))"
        if let sql {
            let oneLine = sql.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }.joined(separator: " ")
            text += " in \"\(oneLine)\""
        }
        return text
    }

    /// The name of a result code, for messages (`sqlite3_errstr` gives prose, not the name).
    static func codeName(_ code: Int32) -> String {
        switch code {
        case SQLITE_BUSY: return "SQLITE_BUSY"
        case SQLITE_LOCKED: return "SQLITE_LOCKED"
        case SQLITE_READONLY: return "SQLITE_READONLY"
        case SQLITE_IOERR: return "SQLITE_IOERR"
        case SQLITE_CORRUPT: return "SQLITE_CORRUPT"
        case SQLITE_FULL: return "SQLITE_FULL"
        case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN"
        case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT"
        case SQLITE_MISMATCH: return "SQLITE_MISMATCH"
        case SQLITE_MISUSE: return "SQLITE_MISUSE"
        case SQLITE_RANGE: return "SQLITE_RANGE"
        case SQLITE_NOTADB: return "SQLITE_NOTADB"
        case SQLITE_ERROR: return "SQLITE_ERROR"
        case SQLITE_CONSTRAINT | (1 << 8): return "SQLITE_CONSTRAINT_CHECK"
        case SQLITE_CONSTRAINT | (3 << 8): return "SQLITE_CONSTRAINT_FOREIGNKEY"
        case SQLITE_CONSTRAINT | (5 << 8): return "SQLITE_CONSTRAINT_NOTNULL"
        case SQLITE_CONSTRAINT | (6 << 8): return "SQLITE_CONSTRAINT_PRIMARYKEY"
        case SQLITE_CONSTRAINT | (8 << 8): return "SQLITE_CONSTRAINT_UNIQUE"
        default:
            if let text = sqlite3_errstr(code) { return "code \(code): \(String(cString: text))" }
            return "code \(code)"
        }
    }
}

/// Error types that a database failure can be wrapped in, so `Database.transaction` and
/// `Database.query` can take closures throwing the caller's own error type.
protocol DatabaseErrorConvertible: Error {
    init(_ error: DatabaseError)
}

extension DatabaseError: DatabaseErrorConvertible {
    init(_ error: DatabaseError) { self = error }
}
