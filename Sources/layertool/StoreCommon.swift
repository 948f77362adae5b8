import ArgumentParser
import Foundation
import LayerKit

/// `--root`, shared by the store commands.
struct StoreOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The layer store (default: /var/lib/layertool for root, else $XDG_DATA_HOME/layertool or ~/.local/share/layertool).",
                               valueName: "DIR"))
    var root: String?

    var resolvedRoot: String { root ?? StorePaths.defaultRoot(environment: ToolEnvironment.variables) }

    /// Opens the store, or returns nil when none was ever created there (read-only commands
    /// then have nothing to show, and do not create one).
    func openExisting() throws -> LayerStore? {
        guard LayerStore.exists(at: resolvedRoot) else {
            // A --root that names no store is a mistake, not an empty store.
            if let root { throw fail(StoreError(.notFound, path: root, "no layer store here")) }
            return nil
        }
        return try open()
    }

    func open(configuration: LayerStore.Configuration = ToolEnvironment.storeConfiguration()) throws -> LayerStore {
        do throws(StoreError) { return try LayerStore(root: resolvedRoot, configuration: configuration) } catch {
            throw fail(error)
        }
    }
}


/// Formatting shared by the store commands.
enum StoreFormat {
    /// `1.9 MiB`.
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[unit])
    }

    /// 12 hex digits of a digest, as `docker images` shows IDs.
    static func short(_ digest: Digest?) -> String { digest.map { String($0.hex.prefix(12)) } ?? "-" }

    static func date(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    /// Left-aligned columns separated by two spaces.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
