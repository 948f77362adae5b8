import Foundation

/// The mounts of this process's mount namespace, read from `/proc/self/mountinfo`.
public struct MountTable: Sendable {
    /// One mount.
    public struct Entry: Sendable, Equatable {
        public var mountID: Int
        public var parentID: Int
        /// The dir of the file system that is mounted here (`/` unless a bind of a subdir).
        public var root: String
        /// Where it is mounted (unescaped).
        public var mountPoint: String
        /// `overlay`, `fuse.layerkit-union`, `ext4`, ...
        public var fileSystemType: String
        /// The mount source (`overlay`, a device, ...).
        public var source: String
        /// The per-superblock options (`lowerdir=...,upperdir=...`).
        public var superOptions: String
        /// The per-mount options (`rw`, `ro`, `nosuid`, ...).
        public var mountOptions: String

        /// The value of `key=` among the superblock options, if present.
        public func superOption(_ key: String) -> String? {
            for option in superOptions.split(separator: ",") where option.hasPrefix(key + "=") {
                return String(option.dropFirst(key.count + 1))
            }
            return nil
        }
    }

    /// Every mount, in the kernel's order (later mounts over earlier ones at the same point).
    public var entries: [Entry]

    /// Reads the current table.
    public static func current() -> MountTable {
        // Read to EOF by hand: procfs reports size 0, and a deep overlay's line runs to tens of KiB.
        let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return MountTable(entries: []) }
        defer { close(fd) }
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += buffer[..<n]
        }
        return MountTable(parsing: String(decoding: bytes, as: UTF8.self))
    }

    public init(entries: [Entry]) { self.entries = entries }

    /// Parses mountinfo text (see proc(5)).
    public init(parsing text: String) {
        var entries = [Entry]()
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count >= 10, let separator = fields.firstIndex(of: "-"), separator + 3 < fields.count,
                  let id = Int(fields[0]), let parent = Int(fields[1]) else { continue }
            entries.append(Entry(mountID: id, parentID: parent, root: Self.unescape(fields[3]), mountPoint: Self.unescape(fields[4]),
                                 fileSystemType: String(fields[separator + 1]), source: Self.unescape(fields[separator + 2]),
                                 superOptions: Self.unescape(fields[separator + 3]), mountOptions: String(fields[5])))
        }
        self.entries = entries
    }

    /// The topmost mount at `path` (compared after resolving symlinks), or nil.
    public func mount(at path: String) -> Entry? {
        let resolved = Self.resolve(path)
        return entries.last { $0.mountPoint == resolved }
    }

    /// `path` with symlinks resolved, or as given when it cannot be.
    static func resolve(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }

    /// mountinfo escapes space, tab, newline and backslash as `\ooo`.
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes = [UInt8]()
        let utf8 = Array(field.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 4 <= utf8.count,
               let value = UInt8(String(decoding: utf8[(i + 1)..<(i + 4)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
