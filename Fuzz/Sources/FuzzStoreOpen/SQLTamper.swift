import FuzzSupport
#if canImport(Glibc)
import Glibc
#endif

/// SQL run on a store's database behind LayerKit's back, through libsqlite3 loaded at run time
/// (the package's own SQLite module is internal to LayerKit).
enum SQLTamper {
    typealias OpenFunction = @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<OpaquePointer?>?) -> Int32
    typealias ExecFunction = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, OpaquePointer?, OpaquePointer?,
                                             UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32
    typealias CloseFunction = @convention(c) (OpaquePointer?) -> Int32
    typealias FreeFunction = @convention(c) (UnsafeMutableRawPointer?) -> Void

    struct Library: @unchecked Sendable {
        let open: OpenFunction
        let exec: ExecFunction
        let close: CloseFunction
        let free: FreeFunction
    }

    static let library: Library = {
        guard let handle = dlopen("libsqlite3.so.0", RTLD_NOW) else { Invariant.fail("cannot load libsqlite3.so.0") }
        func symbol<T>(_ name: String, _: T.Type) -> T {
            guard let pointer = dlsym(handle, name) else { Invariant.fail("libsqlite3 has no \(name)") }
            return unsafeBitCast(pointer, to: T.self)
        }
        return Library(open: symbol("sqlite3_open", OpenFunction.self), exec: symbol("sqlite3_exec", ExecFunction.self),
                       close: symbol("sqlite3_close", CloseFunction.self), free: symbol("sqlite3_free", FreeFunction.self))
    }()

    /// Runs `sql`; errors (a corrupt file, a constraint) are part of the game and ignored.
    static func run(_ sql: String, on path: String) {
        var db: OpaquePointer?
        _ = library.open(path, &db)
        var message: UnsafeMutablePointer<CChar>?
        _ = library.exec(db, sql, nil, nil, &message)
        if let message { library.free(message) }
        _ = library.close(db)
    }

    /// A value of any SQLite type, often the wrong one for its column.
    static func value(_ input: inout FuzzInput) -> String {
        let digestOfSentinel = "'sha256:" + String(repeating: "0", count: 64) + "'"
        switch input.below(12) {
        case 0: return "NULL"
        case 1: return String(Int64(bitPattern: UInt64(input.uint32()) << 32 | UInt64(input.uint32())))
        case 2: return "-1"
        case 3: return "''"
        case 4: return "'../../sentinel'"
        case 5: return "'/'"
        case 6: return digestOfSentinel
        case 7: return "'sha256:" + String(repeating: "g", count: 64) + "'"
        case 8: return "X'" + input.bytes(upTo: 64).map { String(format2: $0) }.joined() + "'"
        case 9: return "CAST(X'" + input.bytes(upTo: 64).map { String(format2: $0) }.joined() + "' AS TEXT)"
        case 10: return "(SELECT chain_id FROM layers LIMIT 1)"
        default: return "1.5"
        }
    }

    static func statement(_ input: inout FuzzInput) -> String {
        let layerColumns = ["chain_id", "diff_id", "blob_digest", "blob_size", "media_type", "parent", "link", "size", "created"]
        let imageColumns = ["name", "manifest_digest", "config_digest", "top_chain_id", "created"]
        let containerColumns = ["id", "image", "chain_id", "driver", "mountpoint", "state", "created", "read_only", "volatile", "daemon_pid"]
        let pragma = input.below(2) == 0 ? "PRAGMA foreign_keys = OFF; " : ""
        switch input.below(14) {
        case 0: return pragma + "UPDATE layers SET \(layerColumns[input.below(layerColumns.count)]) = \(value(&input))"
        case 1: return pragma + "UPDATE images SET \(imageColumns[input.below(imageColumns.count)]) = \(value(&input))"
        case 2: return pragma + "UPDATE containers SET \(containerColumns[input.below(containerColumns.count)]) = \(value(&input))"
        case 3: return "UPDATE layers SET parent = chain_id"
        case 4: return pragma + "DELETE FROM layers"
        case 5:
            return pragma + "INSERT INTO images (name, manifest_digest, config_digest, top_chain_id, created) VALUES (\(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)))"
        case 6:
            return pragma + "INSERT INTO layers (chain_id, diff_id, blob_digest, blob_size, media_type, parent, link, size, created) VALUES (\(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)), \(value(&input)))"
        case 7:
            return pragma + "INSERT INTO containers (id, image, chain_id, driver, mountpoint, state, created, read_only, volatile) VALUES (\(value(&input)), \(value(&input)), \(value(&input)), 'overlay', NULL, 'created', \(value(&input)), 0, 0)"
        case 8: return "PRAGMA user_version = \(Int(Int32(bitPattern: input.uint32())))"
        case 9: return "DROP TABLE \(["images", "layers", "containers", "store_settings"][input.below(4)])"
        case 10: return "UPDATE store_settings SET value = \(value(&input))"
        case 11: return "PRAGMA journal_mode = \(["DELETE", "WAL", "OFF", "MEMORY"][input.below(4)])"
        case 12: return pragma + "UPDATE layers SET link = \(value(&input)) WHERE rowid = (SELECT max(rowid) FROM layers)"
        default:
            return "CREATE TABLE IF NOT EXISTS junk (x); CREATE TRIGGER IF NOT EXISTS t AFTER DELETE ON layers BEGIN INSERT INTO junk VALUES (old.chain_id); END"
        }
    }
}

extension String {
    /// Two lowercase hex digits.
    init(format2 byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
