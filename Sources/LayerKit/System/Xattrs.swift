import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Reading extended attributes: the one reader apply, diff, the union and the store use.
///
/// By path, a final symlink is never followed (`l*xattr`). There is no fd-relative form of these
/// calls in glibc, so entries are named by absolute path (a lookup of `/proc/self/fd/N/name` costs
/// four times more) or by an open fd.
enum Xattrs {
    /// One extended attribute.
    typealias Attribute = (name: String, value: [UInt8])

    /// Every xattr of the entry at an absolute path, sorted by name; empty when it has none or they
    /// cannot be read.
    static func all(atPath path: [UInt8]) -> [Attribute] {
        withCString(path) { p in
            read(list: { llistxattr(p, $0, $1) }, get: { lgetxattr(p, $0, $1, $2) })
        }
    }

    /// Every xattr of an open file, sorted by name.
    static func all(fd: Int32) -> [Attribute] {
        read(list: { flistxattr(fd, $0, $1) }, get: { fgetxattr(fd, $0, $1, $2) })
    }

    /// True when the open file has no xattrs (or its file system keeps none): one call, no copy.
    static func hasNone(fd: Int32) -> Bool {
        let size = flistxattr(fd, nil, 0)
        return size == 0 || (size < 0 && errno == ENOTSUP)
    }

    /// Every xattr of `name` in the dir open at `dirFD` (through `/proc/self/fd`), sorted by name.
    static func all<Name: Collection>(_ dirFD: Int32, _ name: Name) -> [Attribute] where Name.Element == UInt8 {
        all(atPath: Array("/proc/self/fd/\(dirFD)/".utf8) + Array(name))
    }

    /// The names of the xattrs at an absolute path, or nil with `errno` set; empty where the file
    /// system has no xattrs at all.
    static func names(atPath path: [UInt8]) -> [String]? {
        withCString(path) { p -> [String]? in
            var size = llistxattr(p, nil, 0)
            if size < 0 { return errno == ENOTSUP ? [] : nil }
            while true {
                if size == 0 { return [] }
                var buffer = [CChar](repeating: 0, count: size)
                let n = llistxattr(p, &buffer, size)
                if n >= 0 { return splitNames(buffer[..<n]) }
                if errno != ERANGE { return nil }
                size = llistxattr(p, nil, 0)
                if size < 0 { return nil }
            }
        }
    }

    /// One xattr's value at an absolute path; nil (with `errno` set) when absent or unreadable.
    static func value(atPath path: [UInt8], _ name: String) -> [UInt8]? {
        withCString(path) { p -> [UInt8]? in
            read(name, get: { lgetxattr(p, $0, $1, $2) })
        }
    }

    /// Sets one xattr at an absolute path (not following a final symlink).
    static func set(atPath path: [UInt8], _ name: String, _ value: [UInt8], flags: Int32 = 0) throws(Errno) {
        let rc = value.withUnsafeBytes { v in withCString(path) { lsetxattr($0, name, v.baseAddress, v.count, flags) } }
        if rc != 0 { throw Errno(rawValue: errno) }
    }

    // MARK: Internals

    private static func splitNames(_ buffer: ArraySlice<CChar>) -> [String] {
        buffer.split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }

    /// One value, growing the buffer when the kernel says ERANGE.
    private static func read(_ name: String, get: (String, UnsafeMutableRawPointer?, Int) -> Int) -> [UInt8]? {
        var value = [UInt8](repeating: 0, count: 256)
        while true {
            let n = value.withUnsafeMutableBytes { get(name, $0.baseAddress, $0.count) }
            if n >= 0 { return Array(value[..<n]) }
            guard errno == ERANGE else { return nil }
            let needed = get(name, nil, 0)
            guard needed >= 0 else { return nil }
            value = [UInt8](repeating: 0, count: needed + 1)
        }
    }

    /// Lists names, then reads each value.
    private static func read(list: (UnsafeMutablePointer<CChar>?, Int) -> Int,
                             get: (String, UnsafeMutableRawPointer?, Int) -> Int) -> [Attribute] {
        var names = [CChar](repeating: 0, count: 1024)
        var size = list(&names, names.count)
        if size < 0 && errno == ERANGE {
            let needed = list(nil, 0)
            guard needed > 0 else { return [] }
            names = [CChar](repeating: 0, count: needed)
            size = list(&names, needed)
        }
        guard size > 0 else { return [] }
        var result = [Attribute]()
        for key in splitNames(names[..<size]) {
            guard let value = read(key, get: get) else { continue }
            result.append((key, value))
        }
        return result.sorted { $0.name < $1.name }
    }
}

extension Xattrs {
    /// Every xattr of `name` in the dir open at `dirFD`, whose absolute path is `absolute`. Most
    /// entries have none: one `listxattrat` on the dir's fd says so (Linux 6.13). Otherwise they
    /// are read by that path while it fits the kernel's limit (the cheaper lookup), through the
    /// dir's fd when a deep tree makes it longer.
    static func all(_ dirFD: Int32, _ name: [UInt8], absolute: @autoclosure () -> [UInt8]) -> [Attribute] {
        if hasNone(dirFD, name) { return [] }
        let path = absolute()
        return path.count < Int(PATH_MAX) - 1 ? all(atPath: path) : all(dirFD, name)
    }

    /// True when `name` in `dirFD` has no xattrs; false when it has some or the kernel cannot
    /// tell without a path (no `listxattrat`: remembered, so it is asked once).
    private static func hasNone(_ dirFD: Int32, _ name: [UInt8]) -> Bool {
        if listxattratMissing { return false }
        let size = withCString(name) { lk_listxattrat(dirFD, $0, nil, 0) }
        if size == 0 { return true }
        if size < 0 && errno == ENOSYS { listxattratMissing = true }
        return false
    }

    /// Set (once, racing harmlessly) when the kernel has no `listxattrat`.
    nonisolated(unsafe) private static var listxattratMissing = false
}
