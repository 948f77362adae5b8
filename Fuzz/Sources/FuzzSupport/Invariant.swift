#if canImport(Glibc)
import Glibc
#endif

/// Checks that hold for every input; a broken one aborts, which libFuzzer records as a crash
/// with the input that caused it.
public enum Invariant {
    /// Prints `message` and aborts.
    public static func fail(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
        printError("\n==== LayerKit fuzz invariant broken (\(file):\(line)) ====\n\(message)\n")
        abort()
    }

    /// Writes a line to standard error.
    public static func printError(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + done, $0.count - done) }
            if n <= 0 { return }
            done += n
        }
    }

    /// Errors are one line naming the thing and the reason.
    public static func oneLine(_ description: String, _ what: String) {
        if description.isEmpty { fail("\(what): an empty error description") }
        if description.contains(where: { $0 == "\n" || $0 == "\r" }) {
            fail("\(what): the error description is not one line:\n\(description)")
        }
    }

    /// The number of open file descriptors of this process.
    public static func openDescriptors() -> Int {
        guard let dir = opendir("/proc/self/fd") else { fail("cannot read /proc/self/fd") }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let first = entry.pointee.d_name.0
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return count - 1  // the dir's own descriptor
    }

    /// Runs `body` and fails if it leaves descriptors open (its threads joined, its files closed).
    public static func noDescriptorLeak<T>(_ what: String, _ body: () -> T) -> T {
        let before = openDescriptors()
        let result = body()
        let after = openDescriptors()
        if after != before {
            fail("\(what): \(after - before) file descriptor(s) leaked (\(before) open before, \(after) after):\n\(listDescriptors())")
        }
        return result
    }

    /// A NUL-terminated array as a string.
    public static func cString(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func listDescriptors() -> String {
        guard let dir = opendir("/proc/self/fd") else { return "" }
        defer { closedir(dir) }
        var lines = [String]()
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix(".") { continue }
            var buffer = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/self/fd/" + name, &buffer, 4095)
            lines.append("  \(name) -> \(n > 0 ? cString(buffer) : "?")")
        }
        return lines.joined(separator: "\n")
    }
}
