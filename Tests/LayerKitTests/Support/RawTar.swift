import Foundation

/// Tar archives written byte by byte, for headers no tar writer would produce: every field can
/// be given as octal, base-256 or raw bytes, the checksum can be wrong, PAX records can lie
/// about their length.
struct RawHeader {
    /// How a numeric field is written.
    enum Number {
        /// Zero-padded octal, NUL-terminated, filling the field (what GNU tar writes).
        case octal(Int64)
        /// Base-256: high bit set, big-endian two's complement over the whole field.
        case base256(Int64)
        /// Exactly these bytes, NUL-padded to the field's width.
        case raw([UInt8])
    }

    enum Magic {
        case ustar, gnu, v7
        case raw([UInt8])  // 8 bytes at offset 257 (magic and version)
    }

    enum Checksum {
        case unsigned, signed
        case offBy(Int)
        /// Right-aligned in spaces, then a space (`"  12345 "`), as some old tars write it.
        case spacePadded
        case raw([UInt8])
    }

    var name: [UInt8] = Array("file".utf8)
    var mode: Number = .octal(0o644)
    var uid: Number = .octal(0)
    var gid: Number = .octal(0)
    /// nil: the length of the data given to `RawTar.entry`.
    var size: Number? = nil
    var mtime: Number = .octal(1_700_000_000)
    var typeflag: UInt8 = UInt8(ascii: "0")
    var linkname: [UInt8] = []
    var magic: Magic = .ustar
    var devMajor: Number = .octal(0)
    var devMinor: Number = .octal(0)
    var prefix: [UInt8] = []
    /// Bytes written over the block last, before the checksum: `(offset, bytes)`.
    var patches: [(Int, [UInt8])] = []
    var checksum: Checksum = .unsigned

    init(_ name: String = "file", type: Character = "0", _ configure: (inout RawHeader) -> Void = { _ in }) {
        self.name = Array(name.utf8)
        self.typeflag = type.asciiValue!
        configure(&self)
    }

    static func put(_ value: Number, into block: inout [UInt8], at offset: Int, width: Int) {
        var bytes: [UInt8]
        switch value {
        case .octal(let n):
            let digits = Array(String(n, radix: 8).utf8)
            bytes = [UInt8](repeating: UInt8(ascii: "0"), count: max(0, width - 1 - digits.count)) + digits + [0]
        case .base256(let n):
            bytes = (0..<width).map { i in UInt8(truncatingIfNeeded: n >> (8 * (width - 1 - i))) }
            bytes[0] |= 0x80
        case .raw(let raw):
            bytes = raw
        }
        for (i, b) in bytes.prefix(width).enumerated() { block[offset + i] = b }
    }

    func block(dataSize: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        func copy(_ bytes: [UInt8], _ offset: Int, _ width: Int) {
            for (i, c) in bytes.prefix(width).enumerated() { b[offset + i] = c }
        }
        copy(name, 0, 100)
        Self.put(mode, into: &b, at: 100, width: 8)
        Self.put(uid, into: &b, at: 108, width: 8)
        Self.put(gid, into: &b, at: 116, width: 8)
        Self.put(size ?? .octal(Int64(dataSize)), into: &b, at: 124, width: 12)
        Self.put(mtime, into: &b, at: 136, width: 12)
        b[156] = typeflag
        copy(linkname, 157, 100)
        switch magic {
        case .ustar: copy(Array("ustar\u{0}00".utf8), 257, 8)
        case .gnu: copy(Array("ustar  \u{0}".utf8), 257, 8)
        case .v7: break
        case .raw(let m): copy(m, 257, 8)
        }
        if case .v7 = magic {} else {
            Self.put(devMajor, into: &b, at: 329, width: 8)
            Self.put(devMinor, into: &b, at: 337, width: 8)
            copy(prefix, 345, 155)
        }
        for (offset, bytes) in patches { copy(bytes, offset, bytes.count) }
        for i in 148..<156 { b[i] = 0x20 }
        let unsigned = b.reduce(0) { $0 + Int($1) }
        let signed = b.reduce(0) { $0 + Int(Int8(bitPattern: $1)) }
        switch checksum {
        case .unsigned: copy(Array(String(format: "%06o", unsigned).utf8) + [0, 0x20], 148, 8)
        case .signed: copy(Array(String(format: "%06o", signed).utf8) + [0, 0x20], 148, 8)
        case .spacePadded: copy(Array(String(format: "%7o ", unsigned).utf8), 148, 8)
        case .offBy(let d): copy(Array(String(format: "%06o", unsigned + d).utf8) + [0, 0x20], 148, 8)
        case .raw(let raw): copy(raw, 148, 8)
        }
        return b
    }
}

enum RawTar {
    /// The end-of-archive marker: two zero blocks.
    static let end = [UInt8](repeating: 0, count: 1024)
    static let zeroBlock = [UInt8](repeating: 0, count: 512)

    static func padded(_ data: [UInt8]) -> [UInt8] {
        data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    /// A header and its data, padded to a block.
    static func entry(_ header: RawHeader, _ data: [UInt8] = []) -> [UInt8] {
        header.block(dataSize: data.count) + padded(data)
    }

    static func file(_ name: String, _ content: String = "", _ configure: (inout RawHeader) -> Void = { _ in }) -> [UInt8] {
        entry(RawHeader(name, configure), Array(content.utf8))
    }

    /// A PAX record with its correct length: `LENGTH key=value\n`.
    static func record(_ key: String, _ value: String) -> [UInt8] {
        record(Array(key.utf8), Array(value.utf8))
    }

    static func record(_ key: [UInt8], _ value: [UInt8]) -> [UInt8] {
        let body = [UInt8(ascii: " ")] + key + [UInt8(ascii: "=")] + value + [UInt8(ascii: "\n")]
        var length = body.count + 1
        while String(length).utf8.count + body.count != length { length = String(length).utf8.count + body.count }
        return Array(String(length).utf8) + body
    }

    /// A PAX extended header (`x`, or `g` for a global one) holding these record bytes.
    static func pax(_ records: [[UInt8]], type: Character = "x", name: String = "PaxHeaders/file",
                    _ configure: (inout RawHeader) -> Void = { _ in }) -> [UInt8] {
        entry(RawHeader(name, type: type, configure), records.flatMap { $0 })
    }

    /// A GNU long name (`L`) or long link name (`K`) header.
    static func gnuLong(_ value: [UInt8], type: Character = "L") -> [UInt8] {
        entry(RawHeader("././@LongLink", type: type) { $0.magic = .gnu }, value)
    }
}
