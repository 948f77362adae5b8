/// Serializes tar entries (POSIX pax, reproducible: numeric ids, no user/group names, no atime or
/// ctime, nanosecond mtimes only where they exist) into a byte sink.
struct TarFormatter {
    /// Bytes for the header (and pax extended header when needed) of `h`.
    static func headerBytes(_ h: TarHeader) -> [UInt8] {
        var name = h.path
        if h.kind == .dir && !name.isEmpty && name.last != UInt8(ascii: "/") { name.append(UInt8(ascii: "/")) }
        if name.isEmpty { name = Array("./".utf8) }

        var records: [(String, [UInt8])] = []
        var ustarName = name
        if let sparse = h.sparse {
            // GNU sparse 1.0: the real name and size in pax, a placeholder name in the header.
            records.append(("GNU.sparse.major", Array("1".utf8)))
            records.append(("GNU.sparse.minor", Array("0".utf8)))
            records.append(("GNU.sparse.name", name))
            records.append(("GNU.sparse.realsize", Array(String(sparse.realSize).utf8)))
            let dir = EntryPath(bytes: h.path).parent
            let base = EntryPath(bytes: h.path).name
            var placeholder = dir.isRoot ? [] : dir.bytes + [UInt8(ascii: "/")]
            placeholder += Array("GNUSparseFile.0/".utf8) + base
            ustarName = placeholder
        }
        if ustarName.count > 100 {
            records.append(("path", ustarName))
            ustarName = Array(ustarName.prefix(100))
        }
        var link = h.linkTarget
        if link.count > 100 {
            records.append(("linkpath", link))
            link = Array(link.prefix(100))
        }
        let maxOctal7: UInt32 = 0o7777777
        if h.uid > maxOctal7 { records.append(("uid", Array(String(h.uid).utf8))) }
        if h.gid > maxOctal7 { records.append(("gid", Array(String(h.gid).utf8))) }
        if h.size > 0o77777777777 { records.append(("size", Array(String(h.size).utf8))) }
        if h.mtimeNsec != 0 || h.mtime < 0 || h.mtime > 0o77777777777 {
            var s = String(h.mtime)
            // A fraction only after the epoch: Go reads "-2.25" as -2.25 s, libarchive as -2 s
            // and +250000000 ns, so LayerKit refuses a negative time with a fraction as ambiguous
            // (and wrote st_mtim's (-3 s, 750000000 ns) as "-3.75", 1.5 s off). Before the epoch
            // the whole seconds are kept (tv_sec, the time rounded down).
            if h.mtimeNsec != 0 && h.mtime >= 0 {
                var frac = String(h.mtimeNsec)
                frac = String(repeating: "0", count: 9 - frac.count) + frac
                while frac.hasSuffix("0") { frac.removeLast() }
                s += "." + frac
            }
            records.append(("mtime", Array(s.utf8)))
        }
        for (key, value) in h.xattrs.sorted(by: { $0.0 < $1.0 }) {
            records.append(("SCHILY.xattr." + key, value))
        }

        var out = [UInt8]()
        out.reserveCapacity(records.isEmpty ? 512 : 1536)
        if !records.isEmpty {
            var body = [UInt8]()
            for (key, value) in records { body += paxRecord(key, value) }
            let base = EntryPath(bytes: h.path).name
            var paxName = Array("PaxHeaders/".utf8) + base
            if paxName.count > 100 { paxName = Array(paxName.prefix(100)) }
            out += block(name: paxName, mode: 0o644, uid: 0, gid: 0, size: Int64(body.count), mtime: 0,
                         type: UInt8(ascii: "x"), link: [], devMajor: 0, devMinor: 0)
            out += body
            out += [UInt8](repeating: 0, count: (512 - body.count % 512) % 512)
        }
        let clampedMtime = min(max(h.mtime, 0), 0o77777777777)
        out += block(name: ustarName, mode: h.mode & 0o7777, uid: min(h.uid, maxOctal7), gid: min(h.gid, maxOctal7),
                     size: min(h.size, 0o77777777777), mtime: clampedMtime, type: h.kind.rawValue, link: link,
                     devMajor: h.devMajor, devMinor: h.devMinor)
        return out
    }

    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let payload = key.utf8.count + value.count + 3  // ' ', '=', '\n'
        var length = payload + 1
        while String(length).utf8.count + payload != length { length = String(length).utf8.count + payload }
        return Array("\(length) \(key)=".utf8) + value + [0x0a]
    }

    static func block(name: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32, size: Int64, mtime: Int64,
                      type: UInt8, link: [UInt8], devMajor: UInt32, devMinor: UInt32) -> [UInt8] {
        // Written in place, without intermediate strings: this runs once per entry.
        [UInt8](unsafeUninitializedCapacity: 512) { b, count in
            b.initialize(repeating: 0)
            count = 512
            func put<C: Collection>(_ bytes: C, _ offset: Int, _ width: Int) where C.Element == UInt8 {
                var i = offset
                for c in bytes.prefix(width) { b[i] = c; i += 1 }
            }
            /// `width - 1` zero-padded octal digits, then NUL.
            func octal(_ value: Int64, _ offset: Int, _ width: Int) {
                var v = UInt64(max(value, 0))
                var i = offset + width - 2
                while i >= offset {
                    b[i] = UInt8(ascii: "0") + UInt8(v & 7)
                    v >>= 3
                    i -= 1
                }
            }
            put(name, 0, 100)
            octal(Int64(mode), 100, 8)
            octal(Int64(uid), 108, 8)
            octal(Int64(gid), 116, 8)
            octal(size, 124, 12)
            octal(mtime, 136, 12)
            b[156] = type
            put(link, 157, 100)
            put("ustar".utf8, 257, 5)
            b[263] = UInt8(ascii: "0")
            b[264] = UInt8(ascii: "0")
            if type == UInt8(ascii: "3") || type == UInt8(ascii: "4") {
                octal(Int64(devMajor), 329, 8)
                octal(Int64(devMinor), 337, 8)
            }
            for i in 148..<156 { b[i] = 0x20 }
            var sum = 0
            for i in 0..<512 { sum += Int(b[i]) }
            octal(Int64(sum), 148, 7)  // six digits,
            b[154] = 0                 // a NUL, and the space that is already at 155
        }
    }

    /// The sparse map block of GNU sparse 1.0: decimal count, then offset/length pairs, one per
    /// line, padded to a whole block.
    static func sparseMap(_ map: [(Int64, Int64)]) -> [UInt8] {
        var text = "\(map.count)\n"
        for (offset, length) in map { text += "\(offset)\n\(length)\n" }
        var bytes = Array(text.utf8)
        bytes += [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
        return bytes
    }
}
