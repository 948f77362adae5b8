#if canImport(Glibc)
import Glibc
#endif

/// One line per event on standard error: `layertool snapshotter: <time> <message>`.
public struct SnapshotterLog: Sendable {
    /// Also log each read-only call (Stat, Mounts, List, Usage), not only changes.
    public var verbose: Bool

    public init(verbose: Bool = false) {
        self.verbose = verbose
    }

    public func info(_ message: String) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        let time = String(format4(Int(parts.tm_year) + 1900)) + "-" + format2(Int(parts.tm_mon) + 1) + "-" + format2(Int(parts.tm_mday))
            + "T" + format2(Int(parts.tm_hour)) + ":" + format2(Int(parts.tm_min)) + ":" + format2(Int(parts.tm_sec))
            + "." + format3(Int(now.tv_nsec / 1_000_000)) + "Z"
        let line = "layertool snapshotter: \(time) \(message)\n"
        _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    }

    public func debug(_ message: String) {
        if verbose { info(message) }
    }

    private func format2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    private func format3(_ n: Int) -> String { n < 10 ? "00\(n)" : n < 100 ? "0\(n)" : "\(n)" }
    private func format4(_ n: Int) -> String { String(n) }
}
