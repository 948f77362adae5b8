/// Writes small ustar archives (PAX records for long names), for the harness's own fixtures.
public struct TarWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public enum Kind: UInt8 {
        case file = 0x30, hardlink = 0x31, symlink = 0x32, char = 0x33, block = 0x34, directory = 0x35, fifo = 0x36
    }

    public mutating func file(_ name: String, _ content: [UInt8], mode: Int = 0o644) {
        entry(name, .file, mode: mode, content: content)
    }

    public mutating func directory(_ name: String, mode: Int = 0o755) {
        entry(name, .directory, mode: mode)
    }

    public mutating func symlink(_ name: String, to target: String) {
        entry(name, .symlink, mode: 0o777, link: target)
    }

    public mutating func hardlink(_ name: String, to target: String) {
        entry(name, .hardlink, mode: 0o644, link: target)
    }

    public mutating func entry(_ name: String, _ kind: Kind, mode: Int, uid: Int = 0, gid: Int = 0,
                               content: [UInt8] = [], link: String = "", pax: [(String, String)] = []) {
        var records = pax
        if name.utf8.count > 100 { records.append(("path", name)) }
        if link.utf8.count > 100 { records.append(("linkpath", link)) }
        if !records.isEmpty {
            var body = [UInt8]()
            for (key, value) in records {
                let tail = " \(key)=\(value)\n".utf8.count
                var length = tail + 1
                while String(length).count + tail != length { length += 1 }
                body += Array("\(length) \(key)=\(value)\n".utf8)
            }
            header("PaxHeader", kind: 0x78, mode: 0o644, uid: 0, gid: 0, size: body.count, link: "")
            append(body)
        }
        header(name, kind: kind.rawValue, mode: mode, uid: uid, gid: gid, size: content.count, link: link)
        append(content)
    }

    /// The archive with its two zero blocks.
    public mutating func finish() -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: 1024)
    }

    private mutating func append(_ content: [UInt8]) {
        bytes += content
        let pad = (512 - content.count % 512) % 512
        bytes += [UInt8](repeating: 0, count: pad)
    }

    private mutating func header(_ name: String, kind: UInt8, mode: Int, uid: Int, gid: Int, size: Int, link: String) {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ offset: Int, _ length: Int, _ value: [UInt8]) {
            for (i, b) in value.prefix(length).enumerated() { block[offset + i] = b }
        }
        func octal(_ offset: Int, _ length: Int, _ value: Int) {
            let text = String(value, radix: 8)
            put(offset, length - 1, Array((String(repeating: "0", count: max(0, length - 1 - text.count)) + text).utf8))
        }
        put(0, 100, Array(name.utf8))
        octal(100, 8, mode)
        octal(108, 8, uid)
        octal(116, 8, gid)
        octal(124, 12, size)
        octal(136, 12, 1_700_000_000)
        block[156] = kind
        put(157, 100, Array(link.utf8))
        put(257, 6, Array("ustar\0".utf8))
        put(263, 2, Array("00".utf8))
        for i in 148..<156 { block[i] = 0x20 }
        let sum = block.reduce(0) { $0 + Int($1) }
        octal(148, 7, sum)
        block[155] = 0x20
        bytes += block
    }
}
