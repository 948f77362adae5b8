/// How Go's `archive/tar` reads the pieces of a tar stream: the fields of a 512-byte header block
/// (C strings, octal and base-256 numbers, the checksum, the format magic) and the records of a
/// PAX extended header. `TarValidator` applies these to every header LayerKit reads, so a field
/// Go would refuse is refused here too (see `TarValidator` for the list of rules).
///
/// Written from Go 1.19's reader (`reader.go`, `strconv.go`, `format.go`); every function says
/// which of Go's behaviours it follows.
enum TarSyntax {
    static let blockSize = 512
    /// The largest PAX header or GNU long name/link Go reads (`maxSpecialFileSize`, as libarchive).
    static let maximumSpecialFileSize: Int64 = 1 << 20

    /// Byte ranges of the header fields (POSIX ustar, with GNU's and star's variants).
    enum Field {
        static let name = 0..<100
        static let mode = 100..<108
        static let uid = 108..<116
        static let gid = 116..<124
        static let size = 124..<136
        static let mtime = 136..<148
        static let checksum = 148..<156
        static let typeflag = 156
        static let linkname = 157..<257
        static let magic = 257..<263
        static let version = 263..<265
        static let devMajor = 329..<337
        static let devMinor = 337..<345
        static let ustarPrefix = 345..<500
        static let starPrefix = 345..<476
        static let starAccessTime = 476..<488
        static let starChangeTime = 488..<500
        static let starTrailer = 508..<512
        static let gnuAccessTime = 345..<357
        static let gnuChangeTime = 357..<369
        /// The first of the four sparse slots of an old GNU header (24 bytes each: offset, length).
        static let gnuSparse = 386
        static let gnuIsExtended = 482
        static let gnuRealSize = 483..<495
        /// A GNU sparse extension block: 21 slots from offset 0, then the continuation flag.
        static let extensionIsExtended = 504
    }

    /// The header formats Go tells apart (`getFormat`).
    enum Format {
        case v7, ustar, star, gnu

        init(_ block: UnsafeRawBufferPointer) {
            let ustarMagic = TarSyntax.bytes(block, at: Field.magic.lowerBound, equal: "ustar\0")
            if ustarMagic && TarSyntax.bytes(block, at: Field.starTrailer.lowerBound, equal: "tar\0") {
                self = .star
            } else if ustarMagic {
                self = .ustar
            } else if TarSyntax.bytes(block, at: Field.magic.lowerBound, equal: "ustar  \0") {
                self = .gnu  // GNU's magic "ustar " and version " \0"
            } else {
                self = .v7
            }
        }
    }

    // MARK: - Header fields
    //
    // Index loops over raw buffers: these run for every header of every layer.

    /// Whether the bytes at `offset` are those of `literal`.
    static func bytes(_ block: UnsafeRawBufferPointer, at offset: Int, equal literal: StaticString) -> Bool {
        literal.withUTF8Buffer { expected in
            guard offset + expected.count <= block.count else { return false }
            for i in 0..<expected.count where block[offset + i] != expected[i] { return false }
            return true
        }
    }

    static func isZeroBlock(_ block: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        while i + 8 <= block.count {
            if block.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
            i += 8
        }
        while i < block.count {
            if block[i] != 0 { return false }
            i += 1
        }
        return true
    }

    /// A field of a block.
    static func field(_ block: UnsafeRawBufferPointer, _ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: block[range])
    }

    /// A field read as a C string: the bytes before its first NUL, all of them if it has none.
    static func string(_ field: UnsafeRawBufferPointer) -> [UInt8] {
        var n = 0
        while n < field.count && field[n] != 0 { n += 1 }
        return Array(UnsafeRawBufferPointer(rebasing: field[0..<n]))
    }

    /// A numeric field as Go's `parseNumeric` reads it: base-256 (two's complement, big-endian)
    /// when the first byte has its high bit set, octal otherwise. nil when Go reports `ErrHeader`
    /// (not octal, or too large for an Int64).
    static func number(_ field: UnsafeRawBufferPointer) -> Int64? {
        guard field.count > 0, field[0] & 0x80 != 0 else { return octal(field) }
        let invert: UInt8 = field[0] & 0x40 != 0 ? 0xff : 0
        var value: UInt64 = 0
        for i in 0..<field.count {
            var c = field[i] ^ invert
            if i == 0 { c &= 0x7f }
            if value >> 56 != 0 { return nil }
            value = value << 8 | UInt64(c)
        }
        if value >> 63 != 0 { return nil }
        return invert == 0xff ? ~Int64(value) : Int64(value)
    }

    /// Go's `parseOctal`: leading and trailing spaces and NULs are dropped, the rest is cut at its
    /// first NUL and must be octal digits (no sign, no other padding inside).
    static func octal(_ field: UnsafeRawBufferPointer) -> Int64? {
        func isPadding(_ c: UInt8) -> Bool { c == 0x20 || c == 0 }
        var start = 0
        var end = field.count
        while start < end && isPadding(field[start]) { start += 1 }
        while end > start && isPadding(field[end - 1]) { end -= 1 }
        var value: UInt64 = 0
        var i = start
        while i < end && field[i] != 0 {
            let c = field[i]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "7") else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 8)
            if overflow { return nil }
            value = shifted | UInt64(c - UInt8(ascii: "0"))
            i += 1
        }
        return Int64(truncatingIfNeeded: value)
    }

    /// Whether the stored checksum (octal, Go's `parseOctal`) is the sum of the block's bytes with
    /// the checksum field counted as spaces, unsigned (POSIX) or signed (old Sun tar). nil when
    /// the checksum field is not a number.
    static func checksumMatches(_ block: UnsafeRawBufferPointer) -> Bool? {
        guard let stored = octal(field(block, Field.checksum)) else { return nil }
        // Eight bytes at a time: the byte sum of a word, and its bytes of 0x80 or more (each
        // counts 256 less in the signed sum). The checksum field itself counts as spaces.
        let lowBytes: UInt64 = 0x00ff_00ff_00ff_00ff
        var unsigned = 0
        var high = 0
        var offset = 0
        while offset < blockSize {
            let word = block.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            let pairs = (word & lowBytes) &+ ((word >> 8) & lowBytes)
            unsigned += Int((pairs &* 0x0001_0001_0001_0001) >> 48)
            high += (word & 0x8080_8080_8080_8080).nonzeroBitCount
            offset += 8
        }
        for i in Field.checksum {
            unsigned += 0x20 - Int(block[i])
            high -= Int(block[i] >> 7)
        }
        return stored == Int64(unsigned) || stored == Int64(unsigned - 256 * high)
    }

    // MARK: - Text numbers (PAX values, GNU sparse maps)

    /// Go's `strconv.ParseInt(s, 10, 64)`: an optional sign, then decimal digits only; nil when
    /// empty, malformed or out of the Int64 range.
    static func decimal(_ text: ArraySlice<UInt8>) -> Int64? {
        var i = text.startIndex
        var negative = false
        if i < text.endIndex, text[i] == UInt8(ascii: "+") || text[i] == UInt8(ascii: "-") {
            negative = text[i] == UInt8(ascii: "-")
            i += 1
        }
        guard i < text.endIndex else { return nil }
        var magnitude: UInt64 = 0
        while i < text.endIndex {
            let c = text[i]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(c - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            magnitude = sum
            i += 1
        }
        if negative {
            if magnitude > UInt64(Int64.max) + 1 { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        return magnitude > UInt64(Int64.max) ? nil : Int64(magnitude)
    }

    static func decimal(_ text: [UInt8]) -> Int64? { decimal(text[...]) }

    /// A time as seconds and nanoseconds (0 ≤ nanoseconds < 10⁹), the way Go's `time.Time` holds it.
    struct Timestamp: Equatable, CustomStringConvertible {
        var seconds: Int64
        var nanoseconds: Int64

        /// Go's `time.Unix(sec, nsec)`: nanoseconds outside [0, 10⁹) carry into the seconds.
        init(seconds: Int64, nanoseconds: Int64) {
            var s = seconds
            var n = nanoseconds
            if n < 0 || n >= 1_000_000_000 {
                s = s &+ n / 1_000_000_000
                n %= 1_000_000_000
                if n < 0 { n += 1_000_000_000; s = s &- 1 }
            }
            self.seconds = s
            self.nanoseconds = n
        }

        var description: String { nanoseconds == 0 ? "\(seconds)s" : "\(seconds)s+\(nanoseconds)ns" }
    }

    /// Go's `parsePAXTime`: `SECONDS[.FRACTION]`, the seconds as `ParseInt`, the fraction digits
    /// only (truncated to nanoseconds); a negative time subtracts its fraction.
    static func paxTime(_ text: [UInt8]) -> Timestamp? {
        let dot = text.firstIndex(of: UInt8(ascii: "."))
        guard let seconds = decimal(text[..<(dot ?? text.endIndex)]) else { return nil }
        guard let dot else { return Timestamp(seconds: seconds, nanoseconds: 0) }
        var nanoseconds: Int64 = 0
        var digits = 0
        for i in (dot + 1)..<text.count {
            let c = text[i]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            if digits < 9 { nanoseconds = nanoseconds * 10 + Int64(c - UInt8(ascii: "0")) }
            digits += 1
        }
        for _ in min(digits, 9)..<9 { nanoseconds *= 10 }
        let negative = text.first == UInt8(ascii: "-")
        return Timestamp(seconds: seconds, nanoseconds: negative ? -nanoseconds : nanoseconds)
    }

    // MARK: - PAX records

    /// The PAX keys whose values Go reads as the USTAR string fields (no NUL allowed in them).
    static let paxStringKeys: Set<[UInt8]> = [Array("path".utf8), Array("linkpath".utf8), Array("uname".utf8), Array("gname".utf8)]
    static let gnuSparseOffsetKey = Array("GNU.sparse.offset".utf8)
    static let gnuSparseNumBytesKey = Array("GNU.sparse.numbytes".utf8)
    static let gnuSparseMapKey = Array("GNU.sparse.map".utf8)

    /// The records of a PAX extended header (`%d key=value\n`, repeated), as Go's `parsePAX`
    /// reads them: the length is decimal (`ParseInt`), counts its own digits, the space and the
    /// newline, is at least 5 and no longer than what is left; the record ends exactly with a
    /// newline; the key runs to the first `=` and is not empty; a key never holds a NUL and the
    /// values of `path`, `linkpath`, `uname` and `gname` never do (other values may). GNU sparse
    /// 0.0 records (`GNU.sparse.offset`, `GNU.sparse.numbytes`) must alternate, offset first,
    /// without commas, and become one `GNU.sparse.map` record. A later record replaces an
    /// earlier one with the same key. Throws the reason Go would refuse the header for.
    static func paxRecords(_ data: [UInt8]) throws(TarSyntaxError) -> [[UInt8]: [UInt8]] {
        var records: [[UInt8]: [UInt8]] = [:]
        var sparseMap: [[UInt8]] = []
        var rest = data[...]
        while !rest.isEmpty {
            guard let space = rest.firstIndex(of: UInt8(ascii: " ")) else {
                throw TarSyntaxError("PAX record without a length (\(quoted(rest.prefix(16))))")
            }
            let lengthText = rest[rest.startIndex..<space]
            guard let length = decimal(lengthText) else {
                throw TarSyntaxError("PAX record length \(quoted(lengthText)) is not a decimal number")
            }
            guard length >= 5, length <= Int64(rest.count), length > Int64(lengthText.count + 1) else {
                throw TarSyntaxError("PAX record length \(length) is impossible (\(rest.count) bytes left)")
            }
            let end = rest.startIndex + Int(length)
            guard rest[end - 1] == UInt8(ascii: "\n") else {
                throw TarSyntaxError("PAX record of length \(length) does not end with a newline: the length is wrong")
            }
            let record = rest[(space + 1)..<(end - 1)]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else {
                throw TarSyntaxError("PAX record \(quoted(record.prefix(32))) has no '='")
            }
            let key = Array(record[record.startIndex..<equals])
            let value = Array(record[(equals + 1)...])
            guard !key.isEmpty else { throw TarSyntaxError("PAX record with an empty key") }
            if paxStringKeys.contains(key) {
                guard !value.contains(0) else { throw TarSyntaxError("PAX record \(quoted(key)) has a NUL in its value") }
            } else if key.contains(0) {
                throw TarSyntaxError("PAX record key \(quoted(key)) has a NUL")
            }
            if key == gnuSparseOffsetKey || key == gnuSparseNumBytesKey {
                let expected = sparseMap.count % 2 == 0 ? gnuSparseOffsetKey : gnuSparseNumBytesKey
                guard key == expected, !value.contains(UInt8(ascii: ",")) else {
                    throw TarSyntaxError("GNU sparse 0.0 records out of order or with a comma")
                }
                sparseMap.append(value)
            } else {
                records[key] = value
            }
            rest = rest[end...]
        }
        if !sparseMap.isEmpty {
            records[gnuSparseMapKey] = Array(sparseMap.joined(separator: [UInt8(ascii: ",")]))
        }
        return records
    }

    /// A name for a message (invalid UTF-8 replaced).
    static func displayName(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    /// Bytes for a message: printable ASCII as is, anything else escaped, at most 64 bytes.
    static func quoted<S: Collection<UInt8>>(_ bytes: S) -> String {
        var text = "\""
        for c in bytes.prefix(64) {
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): text += "\\" + String(UnicodeScalar(c))
            case 0x20..<0x7f: text += String(UnicodeScalar(c))
            case UInt8(ascii: "\n"): text += "\\n"
            default: text += "\\x" + (c < 16 ? "0" : "") + String(c, radix: 16)
            }
        }
        return text + (bytes.count > 64 ? "...\"" : "\"")
    }
}

/// Why Go's reader refuses a field or a record (the detail after "invalid tar header").
struct TarSyntaxError: Error {
    let detail: String
    init(_ detail: String) { self.detail = detail }
}
