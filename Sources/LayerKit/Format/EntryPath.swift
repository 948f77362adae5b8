/// A path inside a layer, as raw bytes (names in tar archives need not be UTF-8), normalized:
/// no leading or trailing slash, no empty, `.` or `..` components. The empty path is the root.
struct EntryPath: Hashable, Sendable, CustomStringConvertible {
    var bytes: [UInt8]

    static let root = EntryPath(bytes: [])

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// The bytes hashed in one call (an array's own hashing feeds the hasher a byte at a time:
    /// this set of names is consulted for every entry of a layer).
    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: EntryPath, b: EntryPath) -> Bool { a.bytes == b.bytes }

    /// Normalizes an archive name. `..` components are resolved lexically; a relative name that
    /// climbs above the root escapes (returns nil), an absolute name is taken relative to the root,
    /// where `..` stays at the root (as the kernel resolves `/..`).
    static func clean(_ raw: UnsafeBufferPointer<UInt8>) -> EntryPath? {
        var out = [UInt8]()
        out.reserveCapacity(raw.count)
        let absolute = raw.first == UInt8(ascii: "/")
        var i = 0
        let n = raw.count
        while i < n {
            while i < n && raw[i] == UInt8(ascii: "/") { i += 1 }
            if i >= n { break }
            var j = i
            while j < n && raw[j] != UInt8(ascii: "/") { j += 1 }
            let len = j - i
            if len == 1 && raw[i] == UInt8(ascii: ".") {
                // skip
            } else if len == 2 && raw[i] == UInt8(ascii: ".") && raw[i + 1] == UInt8(ascii: ".") {
                if out.isEmpty {
                    if !absolute { return nil }
                } else if let slash = out.lastIndex(of: UInt8(ascii: "/")) {
                    out.removeSubrange(slash...)
                } else {
                    out.removeAll(keepingCapacity: true)
                }
            } else {
                if !out.isEmpty { out.append(UInt8(ascii: "/")) }
                out.append(contentsOf: raw[i..<j])
            }
            i = j
        }
        return EntryPath(bytes: out)
    }

    static func clean(_ string: String) -> EntryPath? {
        var s = string
        return s.withUTF8 { clean($0) }
    }

    var isRoot: Bool { bytes.isEmpty }

    /// The parent path (root for a top-level name); the root's parent is the root.
    var parent: EntryPath {
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return .root }
        return EntryPath(bytes: Array(bytes[..<slash]))
    }

    /// The last component (empty for the root).
    var name: ArraySlice<UInt8> {
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return bytes[...] }
        return bytes[(slash + 1)...]
    }

    func appending<C: Collection>(_ component: C) -> EntryPath where C.Element == UInt8 {
        var b = bytes
        if !b.isEmpty { b.append(UInt8(ascii: "/")) }
        b.append(contentsOf: component)
        return EntryPath(bytes: b)
    }

    var description: String { String(decoding: bytes, as: UTF8.self) }
}

extension EntryPath {
    /// The path as a C string relative to the root ("." for the root itself).
    @inline(__always)
    func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        if bytes.isEmpty { return try LayerKit.withCString([UInt8(ascii: ".")], body) }
        return try LayerKit.withCString(bytes, body)
    }
}
