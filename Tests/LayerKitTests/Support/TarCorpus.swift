import Foundation
import Testing

/// What an archive of the corpus must get from Go's `archive/tar` and from LayerKit.
enum TarVerdict: Sendable, Equatable {
    /// Both read it.
    case accept
    /// Go refuses it; LayerKit must too, with a reason containing this text.
    case reject(String)
    /// Go reads it, but libarchive would read it differently: LayerKit refuses it as an
    /// "ambiguous" entry, with a reason containing this text.
    case ambiguous(String)
}

/// One archive of the corpus, written byte by byte.
struct TarCase: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    let verdict: TarVerdict
    var testDescription: String { name }

    init(_ name: String, _ verdict: TarVerdict, _ parts: [UInt8]...) {
        self.name = name
        self.verdict = verdict
        self.bytes = parts.flatMap { $0 }
    }
}

/// Archives for every rule `TarValidator` enforces, each refused, and their well-formed
/// neighbours, each read.
enum TarCorpus {
    typealias R = RawTar
    static func rec(_ k: String, _ v: String) -> [UInt8] { R.record(k, v) }
    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    static let hello = R.file("hello", "hello\n")

    /// Refused by Go (and so by LayerKit), one rule each.
    static let rejected: [TarCase] = [
        // 1. Checksum
        TarCase("checksum off by one", .reject("checksum mismatch"),
                R.entry(RawHeader("f") { $0.checksum = .offBy(1) }, bytes("x")), R.end),
        TarCase("checksum not octal", .reject("checksum field is not an octal number"),
                R.entry(RawHeader("f") { $0.checksum = .raw(bytes("01234x\0 ")) }, bytes("x")), R.end),
        TarCase("second header with a bad checksum", .reject("checksum mismatch"),
                hello, R.entry(RawHeader("g") { $0.checksum = .offBy(-7) }), R.end),
        // 2. Numeric fields
        TarCase("mode not octal", .reject("the mode field is not a valid number"),
                R.file("f", "x") { $0.mode = .raw(bytes("00006x4\0")) }, R.end),
        TarCase("uid with a space inside", .reject("the uid field is not a valid number"),
                R.file("f", "x") { $0.uid = .raw(bytes("00 0123\0")) }, R.end),
        TarCase("gid with a sign", .reject("the gid field is not a valid number"),
                R.file("f", "x") { $0.gid = .raw(bytes("+000012\0")) }, R.end),
        TarCase("size with an 8", .reject("the size field is not a valid number"),
                R.entry(RawHeader("f") { $0.size = .raw(bytes("0000000008\0")) }), R.end),
        TarCase("mtime with a letter", .reject("the mtime field is not a valid number"),
                R.file("f", "x") { $0.mtime = .raw(bytes("1234567012a\0")) }, R.end),
        TarCase("devmajor of a plain file not octal", .reject("the devmajor field is not a valid number"),
                R.file("f", "x") { $0.devMajor = .raw(bytes("zzzzzzz\0")) }, R.end),
        TarCase("devminor of a device not octal", .reject("the devminor field is not a valid number"),
                R.entry(RawHeader("null", type: "3") { $0.devMinor = .raw(bytes("3.0\0")) }), R.end),
        TarCase("star atime not octal", .reject("the atime field is not a valid number"),
                R.file("f", "x") { $0.patches = [(476, bytes("notanumber!\0")), (508, bytes("tar\0"))] }, R.end),
        TarCase("base-256 mtime beyond 63 bits", .reject("the mtime field is not a valid number"),
                R.file("f", "x") { $0.mtime = .raw([0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) }, R.end),
        TarCase("base-256 size beyond 63 bits", .reject("the size field is not a valid number"),
                R.entry(RawHeader("f") { $0.size = .raw([0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0]) }), R.end),
        // 3. Sizes
        TarCase("negative size", .reject("negative size"),
                R.entry(RawHeader("f") { $0.size = .base256(-1) }), R.end),
        TarCase("negative PAX size", .reject("negative size"),
                R.pax([rec("size", "-5")]), hello, R.end),
        TarCase("negative extension header size", .reject("negative size"),
                R.entry(RawHeader("PaxHeaders/f", type: "x") { $0.size = .base256(-100) }), hello, R.end),
        // 4. PAX records
        TarCase("PAX length too long", .reject("PAX record length 99 is impossible"),
                R.pax([bytes("99 path=evil\n")]), R.file("good", "x"), R.end),
        TarCase("PAX length too short", .reject("does not end with a newline"),
                R.pax([bytes("12 path=evil-and-more\n")]), R.file("good", "x"), R.end),
        TarCase("PAX length below 5", .reject("PAX record length 4 is impossible"),
                R.pax([bytes("4 a\n")]), hello, R.end),
        TarCase("PAX length not decimal", .reject("is not a decimal number"),
                R.pax([bytes("1x path=evil\n")]), hello, R.end),
        TarCase("PAX record without a length", .reject("PAX record without a length"),
                R.pax([bytes("path=evil\n")]), hello, R.end),
        TarCase("PAX record without =", .reject("has no '='"),
                R.pax([bytes("10 pathxx\n")]), hello, R.end),
        TarCase("PAX record with an empty key", .reject("empty key"),
                R.pax([rec("", "value")]), hello, R.end),
        TarCase("PAX path with a NUL", .reject("has a NUL in its value"),
                R.pax([R.record(bytes("path"), bytes("a") + [0] + bytes("b"))]), hello, R.end),
        TarCase("PAX linkpath with a NUL", .reject("has a NUL in its value"),
                R.pax([R.record(bytes("linkpath"), bytes("a") + [0])]), R.entry(RawHeader("l", type: "2") { $0.linkname = bytes("t") }), R.end),
        TarCase("PAX key with a NUL", .reject("has a NUL"),
                R.pax([R.record(bytes("SCHILY.xattr.user.a") + [0] + bytes("b"), bytes("v"))]), hello, R.end),
        TarCase("PAX records followed by NUL padding", .reject("PAX record without a length"),
                R.pax([rec("path", "f"), [0, 0, 0, 0]]), hello, R.end),
        TarCase("PAX global header malformed", .reject("PAX record length 50 is impossible"),
                R.pax([bytes("50 comment=x\n")], type: "g", name: "pax_global_header"), hello, R.end),
        // 5. PAX values
        TarCase("PAX uid not decimal", .reject("PAX record \"uid\"=\"12a\" is not a decimal number"),
                R.pax([rec("uid", "12a")]), hello, R.end),
        TarCase("PAX gid beyond Int64", .reject("PAX record \"gid\""),
                R.pax([rec("gid", "9223372036854775808")]), hello, R.end),
        TarCase("PAX size not decimal", .reject("PAX record \"size\""),
                R.pax([rec("size", "6 ")]), hello, R.end),
        TarCase("PAX mtime fraction not digits", .reject("is not a time"),
                R.pax([rec("mtime", "1700000000.5e3")]), hello, R.end),
        TarCase("PAX atime not a time", .reject("\"atime\""),
                R.pax([rec("atime", "yesterday")]), hello, R.end),
        TarCase("PAX ctime without seconds", .reject("\"ctime\""),
                R.pax([rec("ctime", ".5")]), hello, R.end),
        // 6. Sparse files
        TarCase("old GNU sparse in a ustar header", .reject("not in GNU format"),
                gnuSparse(fragments: [(0, 4)], realSize: 8, data: "abcd") { $0.magic = .ustar }, R.end),
        TarCase("old GNU sparse real size not octal", .reject("GNU sparse real size"),
                gnuSparse(fragments: [(0, 4)], realSize: 8, data: "abcd") { $0.patches.append((483, bytes("9\0"))) }, R.end),
        TarCase("old GNU sparse fragment not octal", .reject("GNU sparse fragment is not a valid number"),
                gnuSparse(fragments: [(0, 4)], realSize: 8, data: "abcd") { $0.patches.append((386, bytes("0000000000x\0"))) }, R.end),
        TarCase("old GNU sparse fragment past the size", .reject("past the size"),
                gnuSparse(fragments: [(6, 4)], realSize: 8, data: "abcd"), R.end),
        TarCase("old GNU sparse fragments overlapping", .reject("overlapping"),
                gnuSparse(fragments: [(0, 4), (2, 2)], realSize: 8, data: "abcdef"), R.end),
        TarCase("old GNU sparse with unreferenced data", .reject("sparse file contains unreferenced data"),
                gnuSparse(fragments: [(0, 2)], realSize: 8, data: "abcd"), R.end),
        TarCase("old GNU sparse referencing missing data", .reject("sparse file references non-existent data"),
                gnuSparse(fragments: [(0, 6)], realSize: 8, data: "abcd"), R.end),
        TarCase("old GNU sparse extension block cut short", .reject("unexpected EOF"),
                Array(gnuSparse(fragments: [(0, 1), (2, 1), (4, 1), (6, 1), (8, 1)], realSize: 10, data: "abcde").prefix(700))),
        TarCase("PAX sparse 0.1 without numblocks", .reject("GNU.sparse.numblocks"),
                R.pax([rec("GNU.sparse.map", "0,4"), rec("GNU.sparse.size", "8")]), R.file("GNUSparseFile.0/f", "abcd"), R.end),
        TarCase("PAX sparse 0.1 map with an odd count", .reject("GNU.sparse.map has 3 numbers for 2 fragments"),
                R.pax([rec("GNU.sparse.numblocks", "2"), rec("GNU.sparse.map", "0,4,6"), rec("GNU.sparse.size", "8")]), R.file("s", "abcd"), R.end),
        TarCase("PAX sparse 0.1 map not decimal", .reject("GNU.sparse.map holds"),
                R.pax([rec("GNU.sparse.numblocks", "1"), rec("GNU.sparse.map", "0,0x4"), rec("GNU.sparse.size", "8")]), R.file("s", "abcd"), R.end),
        TarCase("PAX sparse 0.0 records out of order", .reject("out of order"),
                R.pax([rec("GNU.sparse.numblocks", "1"), rec("GNU.sparse.numbytes", "4"), rec("GNU.sparse.offset", "0")]), R.file("s", "abcd"), R.end),
        TarCase("PAX sparse 0.0 offset with a comma", .reject("with a comma"),
                R.pax([rec("GNU.sparse.numblocks", "1"), rec("GNU.sparse.offset", "0,1"), rec("GNU.sparse.numbytes", "4")]), R.file("s", "abcd"), R.end),
        TarCase("PAX sparse 1.0 map line not decimal", .reject("GNU sparse map line \"#1\""),
                sparse10(map: "#1\n0\n4\n", realSize: 8, data: "abcd"), R.end),
        TarCase("PAX sparse 1.0 map past the data", .reject("runs past the entry's data"),
                R.pax([rec("GNU.sparse.major", "1"), rec("GNU.sparse.minor", "0"), rec("GNU.sparse.realsize", "8")]), R.file("s", "1\n"), R.end),
        TarCase("PAX sparse 1.0 size not decimal", .reject("GNU sparse size"),
                R.pax([rec("GNU.sparse.major", "1"), rec("GNU.sparse.minor", "0"), rec("GNU.sparse.realsize", "8k")]),
                R.entry(RawHeader("s"), R.padded(bytes("0\n"))), R.end),
        TarCase("sparse map on a directory", .reject("a sparse map on an entry without data"),
                R.pax([rec("GNU.sparse.numblocks", "0"), rec("GNU.sparse.map", ""), rec("GNU.sparse.major", "0"), rec("GNU.sparse.minor", "1")]),
                R.entry(RawHeader("d/", type: "5")), R.end),
        // 7. Extension data
        TarCase("PAX header over 1 MiB", .reject("header field too long"),
                R.pax([rec("comment", String(repeating: "c", count: 1 << 20))]), hello, R.end),
        TarCase("GNU long name over 1 MiB", .reject("header field too long"),
                R.gnuLong([UInt8](repeating: UInt8(ascii: "n"), count: (1 << 20) + 1)), hello, R.end),
        // 8. End of the archive
        TarCase("header cut short", .reject("unexpected EOF"), hello, Array(R.file("g", "x").prefix(300))),
        TarCase("data cut short", .reject("unexpected EOF"), Array(R.file("f", String(repeating: "d", count: 2000)).prefix(1500))),
        TarCase("PAX data cut short", .reject("unexpected EOF"), Array(R.pax([rec("path", "p")]).prefix(520))),
        TarCase("zero block then a header", .reject("a zero block (the end-of-archive marker) is followed by data"),
                hello, R.zeroBlock, R.file("smuggled", "x"), R.end),
        TarCase("zero block then half a block", .reject("unexpected EOF"), hello, R.zeroBlock, [UInt8](repeating: 0, count: 100)),
        TarCase("a ustar magic in a block that is no header", .reject("checksum field is not an octal number"),
                Array([UInt8](repeating: UInt8(ascii: "A"), count: 257)) + bytes("ustar\u{0}00") + [UInt8](repeating: UInt8(ascii: "A"), count: 247), R.end),
    ]

    /// Read by Go, but differently by libarchive: refused as ambiguous.
    static let ambiguous: [TarCase] = [
        TarCase("empty PAX size", .ambiguous("size 6 to Go, 0 to libarchive"), R.pax([rec("size", "")]), hello, R.end),
        TarCase("empty PAX uid", .ambiguous("uid 1000 to Go, 0 to libarchive"),
                R.pax([rec("uid", "")]), R.file("f", "x") { $0.uid = .octal(1000) }, R.end),
        TarCase("PAX uid with a plus sign", .ambiguous("uid 5 to Go, 0 to libarchive"), R.pax([rec("uid", "+5")]), hello, R.end),
        TarCase("PAX record length with a plus sign", .ambiguous("path \"evil\" to Go"),
                R.pax([bytes("+14 path=evil\n")]), hello, R.end),
        TarCase("PAX atime with a plus sign", .ambiguous("atime 5s to Go"), R.pax([rec("atime", "+5")]), hello, R.end),
        TarCase("negative PAX mtime with a fraction", .ambiguous("mtime -2s+500000000ns to Go"),
                R.pax([rec("mtime", "-1.5")]), hello, R.end),
        TarCase("octal with leading NULs", .ambiguous("mode 0o644 to Go, 0o0 to libarchive"),
                R.file("f", "x") { $0.mode = .raw([0, 0, 0, 0, 0x36, 0x34, 0x34, 0]) }, R.end),
        TarCase("hardlink with a PAX size", .ambiguous("size 0 to Go, 512 to libarchive"),
                R.pax([rec("size", "512")]), R.entry(RawHeader("hl", type: "1") { $0.linkname = bytes("hello"); $0.size = .octal(0) }),
                R.entry(RawHeader("hidden"), []).prefix(512).map { $0 }, R.end),
        TarCase("plain file named like a dir", .ambiguous("type \"0\" to Go, file type 0o40000 to libarchive"), R.file("dir/"), R.end),
        TarCase("LIBARCHIVE.xattr record", .ambiguous("xattr \"user.a\": none to Go, 3 bytes to libarchive"),
                R.pax([rec("LIBARCHIVE.xattr.user.a", "dmFs")]), hello, R.end),
        TarCase("ustar prefix ending in a slash", .ambiguous("path \"pre//name\" to Go, \"pre/name\" to libarchive"),
                R.file("name", "x") { $0.prefix = bytes("pre/") }, R.end),
        TarCase("invalid ustar magic with a prefix", .ambiguous("path \"name\" to Go, \"pre/name\" to libarchive"),
                R.file("name", "x") { $0.magic = .raw(bytes("ustarX00")); $0.prefix = bytes("pre") }, R.end),
        TarCase("GNU atime that is not a number", .ambiguous("path \"abc/f\" to Go, \"f\" to libarchive"),
                R.file("f", "x") { $0.magic = .gnu; $0.patches = [(345, bytes("abc"))] }, R.end),
        TarCase("PAX header then a global header", .ambiguous("path \"f\" to Go, \"evil\" to libarchive"),
                R.pax([rec("path", "evil")]), R.pax([rec("comment", "g")], type: "g"), R.file("f", "x"), R.end),
        TarCase("GNU.sparse.name without a map", .ambiguous("GNU.sparse records Go's archive/tar does not read as a sparse file"),
                R.pax([rec("GNU.sparse.name", "other")]), hello, R.end),
        TarCase("GNU.sparse.major 01", .ambiguous("GNU.sparse records"),
                R.pax([rec("GNU.sparse.major", "01"), rec("GNU.sparse.minor", "0"), rec("GNU.sparse.realsize", "10")]),
                R.entry(RawHeader("f"), R.padded(bytes("0\n")) + bytes("abc")), R.end),
        TarCase("GNU sparse fields in a plain file header", .ambiguous("GNU sparse fields in a header of type \"0\""),
                R.file("f", "abcd") { $0.magic = .gnu; $0.patches = [(386, bytes("00000000000\0")), (398, bytes("00000000000\0"))] }, R.end),
        TarCase("PAX sparse records on an old GNU sparse entry", .ambiguous("PAX GNU.sparse records on an old GNU sparse entry"),
                R.pax([rec("GNU.sparse.realsize", "99")]), gnuSparse(fragments: [(0, 4)], realSize: 8, data: "abcd"), R.end),
        TarCase("SUN.holesdata", .ambiguous("SUN.holesdata"), R.pax([rec("SUN.holesdata", " 0 4 8")]), R.file("f", "abcdefgh"), R.end),
        TarCase("PAX linkpath on a symlink with an empty ustar linkname", .ambiguous("symlink target \"target\" to Go, \"\" to libarchive"),
                R.pax([rec("linkpath", "target")]), R.entry(RawHeader("l", type: "2")), R.end),
        TarCase("GNU volume header", .ambiguous("type \"V\" is an extension header to libarchive"),
                R.entry(RawHeader("label", type: "V") { $0.magic = .gnu }), hello, R.end),
        TarCase("Solaris ACL header", .ambiguous("type \"A\""), R.entry(RawHeader("acl", type: "A"), bytes("1000001\0user::rwx\0")), hello, R.end),
        TarCase("negative size on a directory", .ambiguous("negative size -1"), R.entry(RawHeader("d/", type: "5") { $0.size = .base256(-1) }), R.end),
        TarCase("negative PAX size on a symlink", .ambiguous("negative PAX size -5"),
                R.pax([rec("size", "-5")]), R.entry(RawHeader("l", type: "2") { $0.linkname = bytes("t") }), hello, R.end),
        TarCase("32 long names before an entry", .ambiguous("more than 31 extension headers"),
                Array((0..<32).map { R.gnuLong(bytes("name\($0)\0")) }.joined()), hello, R.end),
        TarCase("PAX header with no entry after it", .ambiguous("an extension header with no entry after it"),
                hello, R.pax([rec("path", "x")]), R.end),
        TarCase("GNU long name at the end of the stream", .ambiguous("an extension header with no entry after it"),
                hello, R.gnuLong(bytes("x\0"))),
    ]

    /// Read by Go and by LayerKit alike: the edge of each rule, on the accepting side.
    static let accepted: [TarCase] = [
        TarCase("signed checksum (old Sun tar)", .accept, R.file("caf\u{e9}", "x") { $0.checksum = .signed }, R.end),
        TarCase("checksum padded with spaces", .accept, R.file("f", "x") { $0.checksum = .spacePadded }, R.end),
        TarCase("octal padded with spaces", .accept, R.file("f", "x") { $0.mode = .raw(bytes("   644 \0")); $0.uid = .raw(bytes(" 1750  ")) }, R.end),
        TarCase("octal cut at a NUL", .accept, R.file("f", "x") { $0.mode = .raw(bytes("644\0 7x")) }, R.end),
        TarCase("octal fields all NUL or spaces", .accept, R.file("f", "x") { $0.uid = .raw([]); $0.gid = .raw(bytes("       ")) }, R.end),
        TarCase("base-256 uid, gid and size", .accept,
                R.entry(RawHeader("f") { $0.magic = .gnu; $0.uid = .base256(3_000_000); $0.gid = .base256(1 << 40); $0.size = .base256(5) }, bytes("data\n")), R.end),
        TarCase("negative base-256 mtime", .accept, R.file("f", "x") { $0.magic = .gnu; $0.mtime = .base256(-86_400) }, R.end),
        TarCase("v7 header with garbage where ustar has fields", .accept,
                R.file("f", "x") { $0.magic = .v7; $0.patches = [(329, bytes("not a number"))] }, R.end),
        TarCase("two GNU long names: the last one counts", .accept, R.gnuLong(bytes("first\0")), R.gnuLong(bytes("second\0")), hello, R.end),
        TarCase("dir with a size", .accept, R.entry(RawHeader("d/", type: "5") { $0.size = .octal(1024) }), hello, R.end),
        TarCase("PAX length with leading zeros", .accept, R.pax([bytes("0014 path=abc\n")]), hello, R.end),
        TarCase("PAX empty values", .accept, R.pax([rec("path", ""), rec("linkpath", "")]), hello, R.end),
        TarCase("PAX repeated key", .accept, R.pax([rec("path", "first"), rec("path", "second")]), hello, R.end),
        TarCase("PAX xattr with a NUL and an empty one", .accept,
                R.pax([R.record(bytes("SCHILY.xattr.user.bin"), [1, 0, 2]), rec("SCHILY.xattr.user.empty", "")]), hello, R.end),
        TarCase("PAX mtime with more than 9 digits", .accept, R.pax([rec("mtime", "1700000000.1234567891234")]), hello, R.end),
        TarCase("PAX atime and ctime", .accept, R.pax([rec("atime", "1700000001.5"), rec("ctime", "1700000002.25")]), hello, R.end),
        TarCase("PAX mtime with a dot and no fraction", .accept, R.pax([rec("mtime", "1700000000.")]), hello, R.end),
        TarCase("PAX global header with a bad value", .accept, R.pax([rec("uid", "not-checked")], type: "g", name: "pax_global_header"), hello, R.end),
        TarCase("PAX global header alone", .accept, hello, R.pax([rec("comment", "g")], type: "g", name: "pax_global_header"), R.end),
        TarCase("PAX linkpath on a symlink", .accept,
                R.pax([rec("linkpath", String(repeating: "t", count: 150))]), R.entry(RawHeader("l", type: "2") { $0.linkname = bytes(String(repeating: "t", count: 100)) }), R.end),
        TarCase("GNU long name and long link", .accept,
                R.gnuLong(bytes(String(repeating: "n", count: 150) + "\0junk")), R.gnuLong(bytes(String(repeating: "t", count: 150)), type: "K"),
                R.entry(RawHeader("short", type: "2") { $0.magic = .gnu; $0.linkname = bytes("short") }), R.end),
        TarCase("old GNU sparse with an extension block", .accept,
                gnuSparse(fragments: [(0, 1), (2, 1), (4, 1), (6, 1), (8, 1)], realSize: 10, data: "abcde"), R.end),
        TarCase("old GNU sparse, all hole", .accept, gnuSparse(fragments: [], realSize: 4096, data: ""), R.end),
        TarCase("PAX sparse 0.0", .accept,
                R.pax([rec("GNU.sparse.numblocks", "2"), rec("GNU.sparse.offset", "0"), rec("GNU.sparse.numbytes", "2"),
                       rec("GNU.sparse.offset", "6"), rec("GNU.sparse.numbytes", "2"), rec("GNU.sparse.size", "10"), rec("GNU.sparse.name", "s")]),
                R.file("GNUSparseFile.0/s", "abcd"), R.end),
        TarCase("PAX sparse 0.1", .accept,
                R.pax([rec("GNU.sparse.major", "0"), rec("GNU.sparse.minor", "1"), rec("GNU.sparse.numblocks", "2"),
                       rec("GNU.sparse.map", "0,2,6,2"), rec("GNU.sparse.size", "10"), rec("GNU.sparse.name", "s")]),
                R.file("GNUSparseFile.0/s", "abcd"), R.end),
        TarCase("PAX sparse 1.0", .accept, sparse10(map: "2\n0\n2\n6\n2\n", realSize: 10, data: "abcd"), R.end),
        TarCase("PAX sparse 1.0 map over two blocks", .accept,
                sparse10(map: "100\n" + (0..<100).map { "\($0 * 10)\n1\n" }.joined(), realSize: 1000, data: String(repeating: "z", count: 100)), R.end),
        TarCase("PAX path that is not UTF-8", .accept, R.pax([R.record(bytes("path"), [0x63, 0x61, 0x66, 0xe9, 0xff])]), hello, R.end),
        TarCase("ustar name in Latin-1", .accept, R.file("x", "x") { $0.name = [0x63, 0x61, 0x66, 0xe9] }, R.end),
        TarCase("stream without an end marker", .accept, hello),
        TarCase("a single zero block at the end", .accept, hello, R.zeroBlock),
        TarCase("last file's padding cut short", .accept, Array(R.file("f", "abc").prefix(515))),
        TarCase("bytes after the end marker", .accept, hello, R.end, bytes("garbage that nobody reads"), [UInt8](repeating: 0xff, count: 3000)),
        TarCase("empty stream", .accept),
        TarCase("only the end marker", .accept, R.end),
        TarCase("types Go does not know are files", .accept, R.file("f7", "x") { $0.typeflag = UInt8(ascii: "7") }, R.file("fz", "y") { $0.typeflag = UInt8(ascii: "Z") }, R.end),
        TarCase("31 extension headers before an entry", .accept,
                Array((0..<30).map { _ in R.gnuLong(bytes("same-name\0")) }.joined()), R.pax([rec("uid", "7")]), hello, R.end),
    ]

    static var all: [TarCase] { rejected + ambiguous + accepted }

    /// An old GNU sparse entry (type `S`): fragments in the header, and in extension blocks when
    /// there are more than four.
    static func gnuSparse(fragments: [(Int64, Int64)], realSize: Int64, data: String, name: String = "sparse",
                          _ configure: (inout RawHeader) -> Void = { _ in }) -> [UInt8] {
        func slot(_ f: (Int64, Int64), into block: inout [UInt8], at offset: Int) {
            RawHeader.put(.octal(f.0), into: &block, at: offset, width: 12)
            RawHeader.put(.octal(f.1), into: &block, at: offset + 12, width: 12)
        }
        var header = RawHeader(name, type: "S") { $0.magic = .gnu }
        var patch = [UInt8](repeating: 0, count: 512)
        for (i, f) in fragments.prefix(4).enumerated() { slot(f, into: &patch, at: 386 + i * 24) }
        RawHeader.put(.octal(realSize), into: &patch, at: 483, width: 12)
        if fragments.count > 4 { patch[482] = 1 }
        header.patches = [(386, Array(patch[386..<495]))]
        configure(&header)
        var out = header.block(dataSize: data.utf8.count)
        var rest = Array(fragments.dropFirst(4))
        while !rest.isEmpty {
            var ext = [UInt8](repeating: 0, count: 512)
            for (i, f) in rest.prefix(21).enumerated() { slot(f, into: &ext, at: i * 24) }
            rest = Array(rest.dropFirst(21))
            if !rest.isEmpty { ext[504] = 1 }
            out += ext
        }
        return out + R.padded(Array(data.utf8))
    }

    /// A GNU sparse 1.0 entry: PAX records, then the map and the data.
    static func sparse10(map: String, realSize: Int64, data: String) -> [UInt8] {
        let body = R.padded(Array(map.utf8)) + Array(data.utf8)
        return R.pax([rec("GNU.sparse.major", "1"), rec("GNU.sparse.minor", "0"), rec("GNU.sparse.name", "s"),
                      rec("GNU.sparse.realsize", String(realSize))]) + R.entry(RawHeader("GNUSparseFile.0/s"), body)
    }
}

/// Random mutations of header bytes (and of PAX and sparse map data) in well-formed archives,
/// from a fixed seed: the same few hundred archives on every run.
enum TarMutations {
    /// A piece of a base archive: a header block, extension data (PAX records, a sparse map),
    /// or anything else (file data, padding, the end marker), which is left alone.
    enum Kind { case header, extensionData, other }
    struct Segment { var kind: Kind; var bytes: [UInt8] }

    typealias R = RawTar
    static func header(_ h: RawHeader, dataSize: Int = 0) -> Segment { Segment(kind: .header, bytes: h.block(dataSize: dataSize)) }
    static func data(_ d: [UInt8], _ kind: Kind = .other) -> Segment { Segment(kind: kind, bytes: R.padded(d)) }
    static func paxSegments(_ records: [[UInt8]], type: Character = "x") -> [Segment] {
        let body = records.flatMap { $0 }
        return [header(RawHeader("PaxHeaders/e", type: type), dataSize: body.count), data(body, .extensionData)]
    }
    static func file(_ name: String, _ content: String, _ configure: (inout RawHeader) -> Void = { _ in }) -> [Segment] {
        [header(RawHeader(name, configure), dataSize: content.utf8.count), data(Array(content.utf8))]
    }
    static let end = Segment(kind: .other, bytes: R.end)

    /// Well-formed archives of every kind the validator reads.
    static let bases: [[Segment]] = {
        let rec = TarCorpus.rec
        var ustar: [Segment] = [header(RawHeader("d/", type: "5") { $0.mode = .octal(0o755) })]
        ustar += file("d/f", String(repeating: "data ", count: 140))
        ustar += [header(RawHeader("d/link", type: "2") { $0.linkname = Array("f".utf8) }),
                  header(RawHeader("d/hard", type: "1") { $0.linkname = Array("d/f".utf8) }),
                  header(RawHeader("d/fifo", type: "6")),
                  header(RawHeader("d/null", type: "3") { $0.devMajor = .octal(1); $0.devMinor = .octal(3) }),
                  header(RawHeader("name-in-prefix") { $0.prefix = Array("some/prefix".utf8) }), end]
        var pax = paxSegments([rec("comment", "global")], type: "g")
        pax += paxSegments([rec("path", "pax/" + String(repeating: "p", count: 120)), rec("uid", "3000000"), rec("gid", "42"),
                            rec("mtime", "1700000000.25"), rec("SCHILY.xattr.user.a", "value"), rec("size", "3")])
        pax += file("short", "abc")
        pax += paxSegments([rec("linkpath", String(repeating: "t", count: 130))])
        pax += [header(RawHeader("sym", type: "2") { $0.linkname = Array(String(repeating: "t", count: 100).utf8) }), end]
        var gnu = [header(RawHeader("././@LongLink", type: "L") { $0.magic = .gnu }, dataSize: 151),
                   data(Array(String(repeating: "L", count: 150).utf8) + [0], .extensionData),
                   header(RawHeader("././@LongLink", type: "K") { $0.magic = .gnu }, dataSize: 120),
                   data(Array(String(repeating: "K", count: 120).utf8), .extensionData),
                   header(RawHeader("sym", type: "2") { $0.magic = .gnu; $0.linkname = Array(String(repeating: "K", count: 100).utf8) })]
        gnu += file("big-ids", "x") { $0.magic = .gnu; $0.uid = .base256(5_000_000); $0.mtime = .base256(-5) }
        gnu += [end]
        let oldSparse = [Segment(kind: .header, bytes: Array(TarCorpus.gnuSparse(fragments: [(0, 1), (4, 2), (10, 1), (20, 3), (30, 1)], realSize: 40, data: "abcdefgh").prefix(1024))),
                         data(Array("abcdefgh".utf8)), end]
        var sparse10 = paxSegments([rec("GNU.sparse.major", "1"), rec("GNU.sparse.minor", "0"), rec("GNU.sparse.name", "s"), rec("GNU.sparse.realsize", "100")])
        let map = Array("3\n0\n2\n50\n2\n98\n2\n".utf8)
        sparse10 += [header(RawHeader("GNUSparseFile.0/s"), dataSize: 512 + 6), Segment(kind: .extensionData, bytes: R.padded(map)), data(Array("abcdef".utf8)), end]
        var sparse01 = paxSegments([rec("GNU.sparse.major", "0"), rec("GNU.sparse.minor", "1"), rec("GNU.sparse.numblocks", "2"),
                                    rec("GNU.sparse.map", "0,3,7,3"), rec("GNU.sparse.size", "10"), rec("GNU.sparse.name", "s")])
        sparse01 += file("GNUSparseFile.0/s", "abcdef") + [end]
        let v7 = file("old", "v7 data") { $0.magic = .v7 } + [end]
        return [ustar, pax, gnu, oldSparse, sparse10, sparse01, v7]
    }()

    /// SplitMix64: a small, fixed, portable random sequence.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let palette: [UInt8] = Array("0123456789 +-/\n=xgLKS125A".utf8) + [0, 0x80, 0xff, 0x7f]

    /// A header offset, biased toward the fields that matter.
    static func headerOffset(_ rng: inout Random) -> Int {
        switch rng.below(20) {
        case 0: return rng.below(100)                 // name
        case 1..<9: return 100 + rng.below(56)        // mode, uid, gid, size, mtime, checksum
        case 9..<12: return 156                       // typeflag
        case 12: return 157 + rng.below(100)          // linkname
        case 13, 14: return 257 + rng.below(8)        // magic, version
        case 15: return 329 + rng.below(16)           // device numbers
        default: return 345 + rng.below(167)          // prefix, GNU and star fields, sparse slots
        }
    }

    /// `count` mutated archives, named after their base, segment and changes.
    static func generate(count: Int, seed: UInt64 = 0x4c61_7965_724b_6974) -> [(name: String, bytes: [UInt8])] {
        var rng = Random(state: seed)
        var out: [(String, [UInt8])] = []
        while out.count < count {
            let baseIndex = rng.below(bases.count)
            var segments = bases[baseIndex]
            let mutable = segments.indices.filter { segments[$0].kind != .other }
            let target = mutable[rng.below(mutable.count)]
            var bytes = segments[target].bytes
            var changes: [String] = []
            var touchedChecksum = false
            for _ in 0..<(1 + rng.below(3)) {
                let offset: Int
                if segments[target].kind == .header {
                    offset = headerOffset(&rng) + (bytes.count > 512 ? 512 * rng.below(bytes.count / 512) : 0)
                } else {
                    let used = bytes.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? bytes.count
                    offset = rng.below(max(1, used))
                }
                let value = rng.below(8) == 0 ? UInt8(truncatingIfNeeded: rng.next()) : palette[rng.below(palette.count)]
                bytes[offset] = value
                if (148..<156).contains(offset % 512) { touchedChecksum = true }
                changes.append("\(offset)=\(String(value, radix: 16))")
            }
            if segments[target].kind == .header && !touchedChecksum && rng.below(4) != 0 {
                // A header whose checksum is right again: the mutation reaches the fields.
                for i in 148..<156 { bytes[i] = 0x20 }
                let sum = bytes.prefix(512).reduce(0) { $0 + Int($1) }
                for (i, c) in Array(String(format: "%06o", sum).utf8).enumerated() { bytes[148 + i] = c }
                bytes[154] = 0
                bytes[155] = 0x20
                changes.append("checksum")
            }
            segments[target].bytes = bytes
            out.append(("mutation \(out.count) base\(baseIndex) seg\(target) \(changes.joined(separator: ","))", segments.flatMap { $0.bytes }))
        }
        return out
    }
}
