import CFuzzSys
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Everything about a tree that an input must not change: per entry its path, type, mode,
/// owner, size, device number, link target, content digest and xattrs. Walked without
/// following symlinks, iteratively.
public struct TreeSignature: Equatable, CustomStringConvertible {
    public let lines: [String]

    public init(of root: String) {
        var lines = [String]()
        var pending = [""]
        while let relative = pending.popLast() {
            let path = relative.isEmpty ? root : root + "/" + relative
            var st = stat()
            guard lstat(path, &st) == 0 else {
                lines.append("\(relative.isEmpty ? "." : relative) missing")
                continue
            }
            var line = "\(relative.isEmpty ? "." : relative) mode=\(String(st.st_mode, radix: 8)) uid=\(st.st_uid) gid=\(st.st_gid)"
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                line += " size=\(st.st_size) sha256=\(Self.digest(path))"
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: 4097)
                let n = readlink(path, &buffer, 4096)
                line += " -> \(n >= 0 ? Invariant.cString(buffer) : "?")"
            case S_IFCHR, S_IFBLK:
                line += " rdev=\(st.st_rdev)"
            case S_IFDIR:
                for name in Self.names(path).sorted(by: >) { pending.append(relative.isEmpty ? name : relative + "/" + name) }
            default:
                break
            }
            line += Self.xattrs(path)
            lines.append(line)
        }
        self.lines = lines
    }

    public var description: String { lines.joined(separator: "\n") }

    /// The lines of `self` and `other` that differ.
    public func difference(from other: TreeSignature) -> String {
        let a = Set(lines), b = Set(other.lines)
        return (a.subtracting(b).sorted().map { "- " + $0 } + b.subtracting(a).sorted().map { "+ " + $0 }).joined(separator: "\n")
    }

    /// The names in a dir.
    public static func names(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names = [String]()
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func digest(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return "unreadable" }
        defer { close(fd) }
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += buffer[..<n]
        }
        return Digest.sha256(of: bytes).hex
    }

    static func xattrs(_ path: String) -> String {
        var names = [CChar](repeating: 0, count: 65536)
        let n = fuzz_llistxattr(path, &names, names.count)
        guard n > 0 else { return "" }
        var result = ""
        var keys = [String]()
        var start = 0
        for i in 0..<n where names[i] == 0 {
            keys.append(String(decoding: names[start..<i].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            start = i + 1
        }
        for key in keys.sorted() {
            var value = [UInt8](repeating: 0, count: 65536)
            let m = fuzz_lgetxattr(path, key, &value, value.count)
            result += " xattr:\(key)=\(m >= 0 ? Digest.sha256(of: value[..<m]).hex.prefix(16) : "?")"
        }
        return result
    }
}
