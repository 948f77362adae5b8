import CLayerSys
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Small file-system helpers for making test trees and looking at results, with plain syscalls.

/// lstat(2) of `path`, or nil when it does not exist.
func lstatOrNil(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

/// realpath(3) of `path` (every symlink resolved), or nil when it cannot be resolved.
func resolvedPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// The content of the file at `path` as UTF-8 text, or nil when it cannot be read.
func contents(_ path: String) -> String? {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
}

/// Creates or replaces the file at `path` holding `text`; the test fails when it cannot.
func createFile(_ path: String, _ text: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
    createFile(path, bytes: Data(text.utf8), sourceLocation: sourceLocation)
}

/// Creates or replaces the file at `path` holding `bytes`; the test fails when it cannot.
func createFile(_ path: String, bytes: Data, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(FileManager.default.createFile(atPath: path, contents: bytes), "cannot create \(path)", sourceLocation: sourceLocation)
}

/// The value of the extended attribute `name` of `path` (a symlink's own), or nil when it has none.
func xattr(_ path: String, _ name: String) -> [UInt8]? {
    let size = lgetxattr(path, name, nil, 0)
    guard size >= 0 else { return nil }
    var value = [UInt8](repeating: 0, count: size)
    let n = lgetxattr(path, name, &value, size)
    return n >= 0 ? Array(value[..<n]) : nil
}

/// Sets the access and modification times of `path` (a symlink's own).
func setMtime(_ path: String, _ sec: Int, nsec: Int = 0) {
    var times = [timespec(tv_sec: sec, tv_nsec: nsec), timespec(tv_sec: sec, tv_nsec: nsec)]
    utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
}

/// Copies a tree exactly (`cp -a` keeps owners, modes, times, xattrs, hardlinks).
func copyTree(_ from: String, _ to: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let r = try run("/bin/cp", ["-a", from, to])
    #expect(r.status == 0, "cp -a: \(r.stderr)", sourceLocation: sourceLocation)
}

/// makedev(3) as glibc encodes it, for mknod(2) and for comparing `st_rdev`.
func makedevForTest(_ major: UInt32, _ minor: UInt32) -> dev_t {
    dev_t((UInt64(major & 0xfff) << 8) | UInt64(minor & 0xff) | (UInt64(minor & ~0xff) << 12) | (UInt64(major & ~0xfff) << 32))
}

/// Gives the dir `path` the owner and mode of `model` (e.g. an upper or an empty tree's root the
/// root metadata of the lower tree it is compared with).
func copyOwnerAndMode(of model: String, to path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let st = try #require(lstatOrNil(model), "\(model) does not exist", sourceLocation: sourceLocation)
    #expect(chown(path, st.st_uid, st.st_gid) == 0, "chown \(path)", sourceLocation: sourceLocation)
    #expect(chmod(path, st.st_mode & 0o7777) == 0, "chmod \(path)", sourceLocation: sourceLocation)
}
