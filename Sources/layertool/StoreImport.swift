import ArgumentParser
import Foundation
import LayerKit

/// `layertool unpack --image LAYOUT[:REF]` without DEST: import into the layer store.
extension Unpack {
    struct ImportRecord: Encodable {
        struct Layer: Encodable {
            var chainID: Digest
            var diffID: Digest
            var blobDigest: Digest
            var unpacked: Bool
            var size: Int64
        }
        var name: String
        var root: String
        var chainID: Digest?
        var manifestDigest: Digest
        var configDigest: Digest
        var layers: [Layer]
        var unpacked: Int
    }

    func importIntoStore(_ image: String) throws {
        let (layoutPath, reference) = OCIImageLayout.parse(image)
        let storeRoot = root ?? StorePaths.defaultRoot(environment: ToolEnvironment.variables)
        let result: ImportResult
        do throws(StoreError) {
            var configuration = ToolEnvironment.storeConfiguration()
            configuration.applyWorkers = applyWorkers
            let store = try LayerStore(root: storeRoot, configuration: configuration)
            let progress: LayerStore.ImportProgress = { i, count, chainID in Output.progress("[\(i + 1)/\(count)] \(chainID)") }
            if DockerArchive.isArchive(layoutPath) {
                result = try store.importArchive(layoutPath, reference: reference, name: name, progress: progress)
            } else {
                result = try store.importImage(layout: OCIImageLayout(path: layoutPath), reference: reference, name: name, progress: progress)
            }
        } catch {
            Output.endProgress()
            throw fail(error)
        }
        Output.endProgress()
        let record = ImportRecord(
            name: result.image.name, root: storeRoot, chainID: result.image.topChainID,
            manifestDigest: result.image.manifestDigest, configDigest: result.image.configDigest,
            layers: result.layers.map { .init(chainID: $0.chainID, diffID: $0.diffID, blobDigest: $0.blobDigest, unpacked: $0.unpacked, size: $0.size) },
            unpacked: result.unpackedCount)
        if json { return print(Output.json(record)) }
        var lines = [
            "image    \(record.name)",
            "chainID  \(record.chainID.map { $0.description } ?? "none (no layers)")",
        ]
        for (i, layer) in record.layers.enumerated() {
            let state = layer.unpacked ? "unpacked (\(StoreFormat.bytes(layer.size)))" : "already present"
            lines.append("layer \(i + 1)  \(layer.chainID)  \(state)")
        }
        print(lines.joined(separator: "\n"))
    }
}
