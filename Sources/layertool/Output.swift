import ArgumentParser
import Foundation
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Printing for people (aligned text) and for machines (`--json`).
enum Output {
    static var stderrIsTerminal: Bool { isatty(2) == 1 }

    static func human(_ summary: LayerSummary, name: String) -> String {
        var lines = [
            "\(name):",
            "  blob digest  \(summary.blobDigest)",
            "  diffID       \(summary.diffID)",
            "  compression  \(summary.compression.rawValue)",
            "  size         \(summary.blobSize) bytes stored, \(summary.tarSize) bytes of tar",
            "  entries      \(summary.entryCount)",
        ]
        for w in summary.warnings { lines.append("  warning: \(w)") }
        return lines.joined(separator: "\n")
    }

    struct LayerRecord: Encodable {
        var layer: String
        var blobDigest: Digest
        var diffID: Digest
        var chainID: Digest?
        var compression: Compression
        var blobSize: Int64
        var tarSize: Int64
        var entries: Int
        var warnings: [String]
        /// Seconds each side of the pipeline spent waiting for the other (absent for a layer
        /// read without the pipeline).
        var stageWaits: StageWaits?
    }

    static func records(_ summaries: [LayerSummary], names: [String]) -> [LayerRecord] {
        let chain = ChainID.chain(summaries.map(\.diffID))
        return zip(summaries, names).enumerated().map { i, pair in
            let (s, name) = pair
            return LayerRecord(layer: name, blobDigest: s.blobDigest, diffID: s.diffID, chainID: chain[i],
                               compression: s.compression, blobSize: s.blobSize, tarSize: s.tarSize,
                               entries: s.entryCount, warnings: s.warnings, stageWaits: s.stageWaits)
        }
    }

    static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func progress(_ text: String) {
        guard stderrIsTerminal else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
    }

    static func endProgress() {
        guard stderrIsTerminal else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

/// Prints a library error (a layer, image, store or mount error, each naming what it concerns)
/// as one line on stderr and gives the exit code to throw.
func fail(_ error: some Error & CustomStringConvertible) -> ExitCode {
    FileHandle.standardError.write(Data("layertool: \(error.description)\n".utf8))
    return ExitCode(1)
}

/// The compression levels each compressor takes.
enum CompressionLevel {
    static func validate(_ level: Int?, for compression: Compression) throws {
        guard let level else { return }
        switch compression {
        case .gzip where !(1...9).contains(level): throw ValidationError("--level \(level): gzip takes 1-9")
        case .zstd where !(1...19).contains(level): throw ValidationError("--level \(level): zstd takes 1-19")
        case .none: throw ValidationError("--level does not go with an uncompressed layer")
        default: break
        }
    }
}
