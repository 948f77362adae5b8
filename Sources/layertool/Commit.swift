import ArgumentParser
import Foundation
import LayerKit

struct Commit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a container's changes into a new layer and image.",
        discussion: """
            The container's upper dir is diffed into a layer blob (kept in ROOT/blobs/sha256), the
            layer is added to the store, and image NAME is recorded: the container's image with the
            new layer on top, its config and manifest valid OCI (the config gets the layer's diffID
            and a history entry). An image already named NAME is replaced. The container may stay
            mounted.

            Examples:
              layertool commit c1 myimage:v2
              layertool export myimage:v2 ./layout:v2
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(help: ArgumentHelp("The layer's compression.", valueName: "gzip|zstd|none"))
    var compression: String = "gzip"

    @Option(help: "Compression level (gzip 1-9, default 6; zstd 1-19, default 3).")
    var level: Int?

    @Option(name: [.short, .customLong("message")], help: "A comment for the image's history entry.")
    var message: String?

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: "The container.")
    var container: String

    @Argument(help: "The new image's name.")
    var name: String

    func validate() throws {
        guard let chosen = Compression(rawValue: compression) else { throw ValidationError("--compression is gzip, zstd or none") }
        try CompressionLevel.validate(level, for: chosen)
    }

    struct Record: Encodable {
        var image: String
        var chainID: Digest
        var layer: Descriptor
        var diffID: Digest
        var manifest: Descriptor
        var configDigest: Digest
        var unpacked: Bool
        var layerDir: CommittedLayerDir
    }

    func run() throws {
        let opened = try store.open()
        let result: CommitResult
        do throws(StoreError) {
            result = try opened.commit(container: container, as: name, compression: Compression(rawValue: compression)!,
                                       level: level, comment: message)
        } catch {
            throw fail(error)
        }
        let record = Record(image: result.image.name, chainID: result.chainID, layer: result.layer.descriptor, diffID: result.layer.diffID,
                            manifest: result.manifest, configDigest: result.image.configDigest, unpacked: result.unpacked,
                            layerDir: result.layerDir)
        if json { return print(Output.json(record)) }
        print([
            "image     \(record.image)",
            "chainID   \(record.chainID)",
            "layer     \(record.layer.digest) (\(record.layer.size) bytes, \(record.layer.mediaType))",
            "diffID    \(record.diffID)",
            "manifest  \(record.manifest.digest)",
        ].joined(separator: "\n"))
    }
}
