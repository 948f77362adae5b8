import CLayerSys
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What a directory tree holds, entry by entry, never following symlinks: for comparing the
/// result of an apply with what it should be, or a tree before and after (sentinels).
struct TreeSnapshot: Equatable, CustomStringConvertible {
    struct Node: Equatable, CustomStringConvertible {
        var type: String
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32
        var size: Int64
        var content: String   // sha256 hex for files, target for symlinks, "major:minor" for devices
        var mtime: Int?       // seconds; nil when not compared (dirs)
        var xattrs: [String: [UInt8]]
        var linkGroup: Int?   // hardlink group (same number = same inode), for files with nlink > 1

        var description: String {
            "\(type) \(String(mode, radix: 8)) \(uid):\(gid) size=\(size) \(content) mtime=\(mtime.map(String.init) ?? "-") xattrs=\(xattrs.keys.sorted()) link=\(linkGroup.map(String.init) ?? "-")"
        }
    }

    var nodes: [String: Node]

    struct Options {
        var mtimes = true
        var dirMtimes = false
        var xattrs = true
        /// xattrs whose names start with one of these are ignored (e.g. security.selinux set by the host).
        var ignoreXattrPrefixes: [String] = ["security.selinux"]
    }

    init(_ root: String, options: Options = Options()) {
        nodes = [:]
        var inodeGroups: [UInt64: Int] = [:]
        func walk(_ rel: String) {
            let full = rel.isEmpty ? root : root + "/" + rel
            var st = stat()
            guard lstat(full, &st) == 0 else { return }
            let fmt = st.st_mode & 0o170000
            var node = Node(type: "?", mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, size: 0,
                            content: "", mtime: Int(st.st_mtim.tv_sec), xattrs: [:], linkGroup: nil)
            switch fmt {
            case 0o100000:
                node.type = "file"
                node.size = Int64(st.st_size)
                node.content = TreeSnapshot.sha256(ofFile: full)
                if st.st_nlink > 1 {
                    if let g = inodeGroups[UInt64(st.st_ino)] { node.linkGroup = g } else {
                        let g = inodeGroups.count + 1
                        inodeGroups[UInt64(st.st_ino)] = g
                        node.linkGroup = g
                    }
                }
            case 0o040000:
                node.type = "dir"
                if !options.dirMtimes { node.mtime = nil }
            case 0o120000:
                node.type = "symlink"
                var buf = [CChar](repeating: 0, count: 4097)
                let n = readlink(full, &buf, 4096)
                node.content = n >= 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
                node.mode = 0
            case 0o020000, 0o060000:
                node.type = fmt == 0o020000 ? "char" : "block"
                node.content = "\(lk_major(UInt64(st.st_rdev))):\(lk_minor(UInt64(st.st_rdev)))"
            case 0o010000: node.type = "fifo"
            case 0o140000: node.type = "socket"
            default: break
            }
            if !options.mtimes { node.mtime = nil }
            if options.xattrs { node.xattrs = TreeSnapshot.xattrs(full, ignoring: options.ignoreXattrPrefixes) }
            nodes[rel.isEmpty ? "." : rel] = node
            if fmt == 0o040000, let names = try? FileManager.default.contentsOfDirectory(atPath: full) {
                for name in names.sorted() { walk(rel.isEmpty ? name : rel + "/" + name) }
            }
        }
        walk("")
        // Hardlink group numbers depend on walk order only; renumber by first path for stability.
        var renumber: [Int: Int] = [:]
        for key in nodes.keys.sorted() {
            if let g = nodes[key]?.linkGroup {
                if renumber[g] == nil { renumber[g] = renumber.count + 1 }
                nodes[key]?.linkGroup = renumber[g]
            }
        }
    }

    var description: String {
        nodes.keys.sorted().map { "\($0): \(nodes[$0]!)" }.joined(separator: "\n")
    }

    /// Lines describing how `other` differs from `self`; empty when equal.
    func differences(from other: TreeSnapshot) -> [String] {
        var out = [String]()
        for key in Set(nodes.keys).union(other.nodes.keys).sorted() {
            switch (nodes[key], other.nodes[key]) {
            case let (a?, b?) where a != b: out.append("\(key): \(a)  vs  \(b)")
            case (_?, nil): out.append("\(key): only in the first tree")
            case (nil, _?): out.append("\(key): only in the second tree")
            default: break
            }
        }
        return out
    }

    /// The hex sha256 of a file's content (DigestOracle), or "unreadable".
    static func sha256(ofFile path: String) -> String {
        DigestOracle.hex(ofFile: path) ?? "unreadable"
    }

    /// Every extended attribute of `path` (a symlink's own) but those starting with one of `ignoring`.
    static func xattrs(_ path: String, ignoring: [String]) -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        let size = llistxattr(path, nil, 0)
        guard size > 0 else { return result }
        var names = [CChar](repeating: 0, count: size)
        let n = llistxattr(path, &names, size)
        guard n > 0 else { return result }
        for name in names[..<n].split(separator: 0).map({ String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }) {
            if ignoring.contains(where: { name.hasPrefix($0) }) { continue }
            let vsize = lgetxattr(path, name, nil, 0)
            guard vsize >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: vsize)
            _ = lgetxattr(path, name, &value, vsize)
            result[name] = value
        }
        return result
    }
}

extension TreeSnapshot {
    /// Expects `got` to equal `want` entry by entry, listing the first differences, and `want` to
    /// hold at least `minimumEntries` entries, its root included (so that "equal" is not "both
    /// empty").
    static func expectSame(_ want: TreeSnapshot, _ wantName: String, _ got: TreeSnapshot, _ gotName: String,
                           atLeast minimumEntries: Int = 2, sourceLocation: SourceLocation = #_sourceLocation) {
        let diffs = want.differences(from: got)
        #expect(diffs.isEmpty, Comment(rawValue: "\(wantName) (first) and \(gotName) (second) differ:\n" + diffs.prefix(40).joined(separator: "\n")),
                sourceLocation: sourceLocation)
        #expect(want.nodes.count >= minimumEntries, "\(wantName) holds \(want.nodes.count) entries, fewer than \(minimumEntries)",
                sourceLocation: sourceLocation)
    }

    /// A tree as two extractions of one image are compared: the root's own mtime left out (the
    /// extracting tool sets it), dir mtimes compared only when asked.
    static func unpacked(_ root: String, dirMtimes: Bool = false) -> TreeSnapshot {
        var snapshot = TreeSnapshot(root, options: Options(dirMtimes: dirMtimes))
        snapshot.nodes["."]?.mtime = nil
        return snapshot
    }
}
