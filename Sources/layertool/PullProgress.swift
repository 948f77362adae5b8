import Foundation
import LayerKit
import LayerKitRegistry
#if canImport(Glibc)
import Glibc
#endif

/// The progress of a pull on a terminal: one line per layer (its blob, bytes received of its
/// size, its rate, what is happening to it), redrawn in place at most ten times a second.
/// Nothing is drawn when stderr is not a terminal; an image with more layers than the terminal
/// has lines gets one summary line instead.
final class PullProgress: @unchecked Sendable {
    private enum Phase {
        case waiting, downloading, downloaded, applied, present, dismissed, blobStored

        var label: String {
            switch self {
            case .waiting: return "waiting"
            case .downloading: return "downloading"
            case .downloaded: return "downloaded"
            case .applied: return "applied"
            case .present: return "already in the store"
            case .dismissed: return "added by another pull"
            case .blobStored: return "blob stored"
            }
        }
    }

    private struct Row {
        var digest: Digest
        var total: Int64
        var received: Int64 = 0
        var phase = Phase.waiting
        var firstByte: ContinuousClock.Instant?
        var lastByte: ContinuousClock.Instant?
    }

    private let lock = NSLock()
    private let enabled = Output.stderrIsTerminal
    private var rows = [Row]()
    private var drawnLines = 0
    private var committing = false
    private var lastDraw = ContinuousClock.now - .seconds(1)
    private let start = ContinuousClock.now

    /// Seconds since the pull started.
    var elapsed: Double { Self.seconds(ContinuousClock.now - start) }

    /// Takes a pull event (from any thread).
    func handle(_ event: PullEvent) {
        lock.lock()
        var force = true
        switch event {
        case .resolved(let image):
            rows = image.layers.map { Row(digest: $0.descriptor.digest, total: $0.descriptor.size) }
        case .planned(let needs):
            for (i, need) in needs.enumerated() where i < rows.count && need == .present { rows[i].phase = .present }
        case .downloading(let layer, let received, _):
            guard layer < rows.count else { break }
            let now = ContinuousClock.now
            if rows[layer].firstByte == nil { rows[layer].firstByte = now }
            rows[layer].lastByte = now
            rows[layer].received = received
            if rows[layer].phase == .waiting { rows[layer].phase = .downloading }
            force = false
        case .downloaded(let layer):
            if layer < rows.count, rows[layer].phase == .downloading || rows[layer].phase == .waiting { rows[layer].phase = .downloaded }
        case .dismissed(let layer):
            if layer < rows.count { rows[layer].phase = .dismissed }
        case .applied(let layer, _):
            if layer < rows.count { rows[layer].phase = .applied }
        case .blobStored(let layer):
            if layer < rows.count { rows[layer].phase = .blobStored }
        case .committing:
            committing = true
        }
        lock.unlock()
        draw(force: force)
    }

    /// Draws the final state (the lines stay on the terminal).
    func finish() { draw(force: true) }

    private func draw(force: Bool) {
        guard enabled else { return }
        lock.lock()
        let now = ContinuousClock.now
        guard force || now - lastDraw >= .milliseconds(100) else { lock.unlock(); return }
        lastDraw = now
        var text = ""
        let height = Self.terminalRows()
        if rows.count + 1 > height || rows.isEmpty {
            let got = rows.reduce(Int64(0)) { $0 + $1.received }, total = rows.reduce(Int64(0)) { $0 + $1.total }
            let done = rows.filter { $0.phase != .waiting && $0.phase != .downloading && $0.phase != .downloaded }.count
            let rate = Int64(Double(got) / max(Self.seconds(now - start), 0.001))
            text = "\r\u{1B}[Kpulling: \(StoreFormat.bytes(got)) of \(StoreFormat.bytes(total)) at \(StoreFormat.bytes(rate))/s; layers done \(done)/\(rows.count)"
            drawnLines = 0
        } else {
            if drawnLines > 0 { text += "\u{1B}[\(drawnLines)F" }
            let width = String(rows.count).count
            for (i, row) in rows.enumerated() {
                var line = "layer \(String(i + 1).leftPadded(to: width))/\(rows.count)  \(row.digest.algorithm):\(row.digest.hex.prefix(12))  "
                switch row.phase {
                case .present, .dismissed:
                    line += row.phase.label
                default:
                    line += "\(StoreFormat.bytes(row.received).leftPadded(to: 9)) / \(StoreFormat.bytes(row.total).leftPadded(to: 9))"
                    if let first = row.firstByte, let last = row.lastByte ?? row.firstByte {
                        let end = row.phase == .downloading ? now : last
                        let seconds = Self.seconds(end - first)
                        if seconds > 0.05 { line += "  \(StoreFormat.bytes(Int64(Double(row.received) / seconds)).leftPadded(to: 9))/s" }
                    }
                    line += "  " + (committing && row.phase == .applied ? "committing" : row.phase.label)
                }
                text += "\r\u{1B}[K" + line + "\n"
            }
            drawnLines = rows.count
        }
        lock.unlock()
        FileHandle.standardError.write(Data(text.utf8))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// The terminal's height (24 when it cannot say).
    private static func terminalRows() -> Int {
        var size = winsize()
        guard ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0 else { return 24 }
        return Int(size.ws_row)
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
