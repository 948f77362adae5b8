import CArchive
import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// One entry of a test archive. Names and link targets are written exactly as given (libarchive's
/// writer does not clean them), so archives can say anything a hostile layer could.
struct TarEntry: Sendable {
    enum Kind { case file, dir, symlink, hardlink, fifo, char, block }
    var kind: Kind
    var path: String
    var content: [UInt8] = []
    var linkTarget: String = ""
    var mode: UInt32 = 0o644
    var uid: Int64 = 0
    var gid: Int64 = 0
    var mtime: Int = 1_700_000_000
    var mtimeNsec: Int = 0
    var atime: (Int, Int)? = nil
    var xattrs: [(String, [UInt8])] = []
    var devMajor: UInt64 = 0
    var devMinor: UInt64 = 0

    static func file(_ path: String, _ content: String = "", mode: UInt32 = 0o644, uid: Int64 = 0, gid: Int64 = 0) -> TarEntry {
        TarEntry(kind: .file, path: path, content: Array(content.utf8), mode: mode, uid: uid, gid: gid)
    }
    static func dir(_ path: String, mode: UInt32 = 0o755, uid: Int64 = 0, gid: Int64 = 0) -> TarEntry {
        TarEntry(kind: .dir, path: path, mode: mode, uid: uid, gid: gid)
    }
    static func symlink(_ path: String, _ target: String) -> TarEntry {
        TarEntry(kind: .symlink, path: path, linkTarget: target, mode: 0o777)
    }
    static func hardlink(_ path: String, _ target: String) -> TarEntry {
        TarEntry(kind: .hardlink, path: path, linkTarget: target)
    }
    static func whiteout(_ dir: String, _ name: String) -> TarEntry {
        .file(dir.isEmpty ? ".wh.\(name)" : "\(dir)/.wh.\(name)")
    }
    static func opaque(_ dir: String) -> TarEntry { .file("\(dir)/.wh..wh..opq") }
    static func fifo(_ path: String) -> TarEntry { TarEntry(kind: .fifo, path: path, mode: 0o600) }
    static func char(_ path: String, _ major: UInt64, _ minor: UInt64) -> TarEntry {
        TarEntry(kind: .char, path: path, mode: 0o666, devMajor: major, devMinor: minor)
    }
}

enum TestCompression: Sendable { case none, gzip, zstd }

/// Writes test archives with libarchive (PAX format).
enum TarBuilder {
    static func build(_ entries: [TarEntry], compression: TestCompression = .none) -> [UInt8] {
        let a = archive_write_new()!
        defer { archive_write_free(a) }
        archive_write_set_format_pax(a)
        switch compression {
        case .none: break
        case .gzip: archive_write_add_filter_gzip(a)
        case .zstd: archive_write_add_filter_zstd(a)
        }
        archive_write_set_bytes_in_last_block(a, 1)
        let box = Unmanaged.passRetained(OutputBox())
        defer { box.release() }
        archive_write_open(a, box.toOpaque(), nil, { _, client, buffer, length in
            let out = Unmanaged<OutputBox>.fromOpaque(client!).takeUnretainedValue()
            out.bytes.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: length))
            return length
        }, nil)
        for e in entries {
            let entry = archive_entry_new()!
            defer { archive_entry_free(entry) }
            archive_entry_copy_pathname(entry, e.path)
            archive_entry_set_uid(entry, e.uid)
            archive_entry_set_gid(entry, e.gid)
            archive_entry_set_mtime(entry, e.mtime, e.mtimeNsec)
            if let (sec, nsec) = e.atime { archive_entry_set_atime(entry, sec, nsec) }
            for (name, value) in e.xattrs {
                value.withUnsafeBytes { archive_entry_xattr_add_entry(entry, name, $0.baseAddress, value.count) }
            }
            let typeBits: UInt32
            switch e.kind {
            case .file: typeBits = 0o100000
            case .dir: typeBits = 0o040000
            case .symlink: typeBits = 0o120000
            case .hardlink: typeBits = 0o100000
            case .fifo: typeBits = 0o010000
            case .char: typeBits = 0o020000
            case .block: typeBits = 0o060000
            }
            archive_entry_set_mode(entry, typeBits | e.mode)
            switch e.kind {
            case .symlink: archive_entry_copy_symlink(entry, e.linkTarget)
            case .hardlink:
                archive_entry_copy_hardlink(entry, e.linkTarget)
                archive_entry_set_size(entry, 0)
            case .char, .block:
                archive_entry_set_rdevmajor(entry, dev_t(e.devMajor))
                archive_entry_set_rdevminor(entry, dev_t(e.devMinor))
            case .file: archive_entry_set_size(entry, la_int64_t(e.content.count))
            default: break
            }
            precondition(archive_write_header(a, entry) >= ARCHIVE_WARN, String(cString: archive_error_string(a)))
            if e.kind == .file && !e.content.isEmpty {
                e.content.withUnsafeBytes { _ = archive_write_data(a, $0.baseAddress, $0.count) }
            }
        }
        archive_write_close(a)
        return box.takeUnretainedValue().bytes
    }

    /// Writes an archive to a file and returns its path.
    @discardableResult
    static func write(_ entries: [TarEntry], to path: String, compression: TestCompression = .none) -> String {
        createFile(path, bytes: Data(build(entries, compression: compression)))
        return path
    }

    final class OutputBox { var bytes = [UInt8]() }
}
