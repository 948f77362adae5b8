import ArgumentParser
import Foundation
import LayerKit

struct Gc: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove the layers no image or container uses, and print what was freed.",
        discussion: """
            Waits for imports in progress to finish. Records are removed first, in one transaction,
            then the dirs: an interrupted gc leaves only dirs without records, which the next use of
            the store removes.
            """
    )

    @OptionGroup var store: StoreOptions

    @Flag(help: "Print the result as JSON.")
    var json = false

    struct Removed: Encodable {
        var chainID: Digest
        var diffID: Digest
        var size: Int64
    }

    struct Result: Encodable {
        var removed: [Removed]
        var freedBytes: Int64
        var removedBlobs: Int
        var freedBlobBytes: Int64
    }

    func run() throws {
        var result = GarbageCollection(removed: [])
        if let opened = try store.openExisting() {
            do throws(StoreError) { result = try opened.collectGarbage() } catch { throw fail(error) }
        }
        if json {
            print(Output.json(Result(removed: result.removed.map { Removed(chainID: $0.chainID, diffID: $0.diffID, size: $0.size) },
                                     freedBytes: result.freedBytes, removedBlobs: result.removedBlobs,
                                     freedBlobBytes: result.freedBlobBytes)))
            return
        }
        guard !result.removed.isEmpty || result.removedBlobs > 0 else { return print("nothing to remove") }
        for layer in result.removed { print("removed \(layer.chainID) (\(StoreFormat.bytes(layer.size)))") }
        if !result.removed.isEmpty {
            print("freed \(StoreFormat.bytes(result.freedBytes)) (\(result.freedBytes) bytes) in \(result.removed.count) layer\(result.removed.count == 1 ? "" : "s")")
        }
        if result.removedBlobs > 0 {
            print("freed \(StoreFormat.bytes(result.freedBlobBytes)) (\(result.freedBlobBytes) bytes) in \(result.removedBlobs) blob\(result.removedBlobs == 1 ? "" : "s") no image needs")
        }
    }
}
