import CSQLite

/// A value as SQLite stores it.
enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// A Swift value that can be bound to a statement parameter.
protocol SQLBindable {
    var sqlValue: SQLValue { get }
}

extension Int: SQLBindable { var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int64: SQLBindable { var sqlValue: SQLValue { .integer(self) } }
extension Int32: SQLBindable { var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Bool: SQLBindable { var sqlValue: SQLValue { .integer(self ? 1 : 0) } }
extension Double: SQLBindable { var sqlValue: SQLValue { .real(self) } }
extension String: SQLBindable { var sqlValue: SQLValue { .text(self) } }
extension Array: SQLBindable where Element == UInt8 { var sqlValue: SQLValue { .blob(self) } }
extension SQLValue: SQLBindable { var sqlValue: SQLValue { self } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// One result row, valid only until the statement steps again. Getters check the column's type:
/// reading NULL as a String, or text as an integer, is an error naming the column and the SQL
/// rather than a silent 0 or "".
struct Row {
    fileprivate let statement: Statement

    private var handle: OpaquePointer { statement.handle }

    /// The SQL of the statement this row comes from.
    var statementSQL: String { statement.sql }
    /// The database file, for errors.
    var databasePath: String { statement.database.path }

    /// The number of columns.
    var count: Int32 { sqlite3_column_count(handle) }

    /// The column's declared or result name.
    func name(_ index: Int32) -> String {
        sqlite3_column_name(handle, index).map { String(cString: $0) } ?? "column \(index)"
    }

    func isNull(_ index: Int32) -> Bool { sqlite3_column_type(handle, index) == SQLITE_NULL }

    /// The column as it is stored.
    func value(_ index: Int32) -> SQLValue {
        switch sqlite3_column_type(handle, index) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, index))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, index))
        case SQLITE_TEXT: return .text(text(index))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(handle, index))
            guard count > 0, let base = sqlite3_column_blob(handle, index) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: base, count: count)))
        default: return .null
        }
    }

    func int64(_ index: Int32) throws(DatabaseError) -> Int64 {
        guard case .integer(let v) = value(index) else { throw typeError(index, "an integer") }
        return v
    }

    func int(_ index: Int32) throws(DatabaseError) -> Int { Int(try int64(index)) }

    /// The largest byte count a record may hold (1 PiB), whatever a rewritten database says.
    static let maximumByteCount: Int64 = 1 << 50

    /// A size in bytes: an integer from 0 to `maximumByteCount`.
    func byteCount(_ index: Int32) throws(DatabaseError) -> Int64 {
        let v = try int64(index)
        guard v >= 0 && v <= Self.maximumByteCount else {
            throw DatabaseError(code: SQLITE_MISMATCH, message: "column \(name(index)) holds \(v), not a size in bytes",
                                sql: statement.sql, path: statement.database.path)
        }
        return v
    }

    func optionalByteCount(_ index: Int32) throws(DatabaseError) -> Int64? {
        isNull(index) ? nil : try byteCount(index)
    }

    func optionalInt64(_ index: Int32) throws(DatabaseError) -> Int64? {
        isNull(index) ? nil : try int64(index)
    }

    func string(_ index: Int32) throws(DatabaseError) -> String {
        guard sqlite3_column_type(handle, index) == SQLITE_TEXT else { throw typeError(index, "text") }
        return text(index)
    }

    func optionalString(_ index: Int32) throws(DatabaseError) -> String? {
        isNull(index) ? nil : try string(index)
    }

    private func text(_ index: Int32) -> String {
        let count = Int(sqlite3_column_bytes(handle, index))
        guard let base = sqlite3_column_text(handle, index) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: base, count: count), as: UTF8.self)
    }

    private func typeError(_ index: Int32, _ wanted: String) -> DatabaseError {
        let found: String
        switch value(index) {
        case .null: found = "NULL"
        case .integer: found = "an integer"
        case .real: found = "a real"
        case .text: found = "text"
        case .blob: found = "a blob"
        }
        return DatabaseError(code: SQLITE_MISMATCH, message: "column \(name(index)) is \(found), expected \(wanted)",
                             sql: statement.sql, path: statement.database.path)
    }
}

/// A prepared statement: one SQL statement, parameters bound by position (`?`), stepped row by row.
final class Statement {
    let sql: String
    let database: Database
    fileprivate let handle: OpaquePointer

    /// Compiles `sql`, which must be exactly one statement.
    init(_ database: Database, _ sql: String) throws(DatabaseError) {
        self.sql = sql
        self.database = database
        var statement: OpaquePointer?
        var tail: UnsafePointer<CChar>?
        let rc = sql.withCString { sqlite3_prepare_v2(database.handle, $0, -1, &statement, &tail) }
        guard rc == SQLITE_OK, let statement else {
            throw database.error(rc, sql: sql)
        }
        if let tail, tail.pointee != 0, !String(cString: tail).allSatisfy({ $0.isWhitespace || $0 == ";" }) {
            sqlite3_finalize(statement)
            throw DatabaseError(code: SQLITE_MISUSE, message: "more than one statement given to prepare", sql: sql, path: database.path)
        }
        self.handle = statement
    }

    deinit { sqlite3_finalize(handle) }

    /// Binds `values` to the parameters, in order, replacing earlier bindings. The count must match.
    func bind(_ values: [any SQLBindable]) throws(DatabaseError) {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        let expected = Int(sqlite3_bind_parameter_count(handle))
        guard values.count == expected else {
            throw DatabaseError(code: SQLITE_RANGE, message: "\(values.count) values bound to \(expected) parameters", sql: sql, path: database.path)
        }
        // SQLITE_TRANSIENT: SQLite copies the bytes before the call returns.
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value.sqlValue {
            case .null: rc = sqlite3_bind_null(handle, index)
            case .integer(let v): rc = sqlite3_bind_int64(handle, index, v)
            case .real(let v): rc = sqlite3_bind_double(handle, index, v)
            case .text(let v): rc = sqlite3_bind_text(handle, index, v, -1, transient)
            case .blob(let v): rc = v.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), transient) }
            }
            guard rc == SQLITE_OK else { throw database.error(rc, sql: sql) }
        }
    }

    /// Runs the statement to its next row: the row, or nil when it is done.
    func step() throws(DatabaseError) -> Row? {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return Row(statement: self)
        case SQLITE_DONE: return nil
        default:
            let error = database.error(rc, sql: sql)
            sqlite3_reset(handle)
            throw error
        }
    }

    /// Resets the statement so it can run again (bindings are kept).
    func reset() { sqlite3_reset(handle) }
}
