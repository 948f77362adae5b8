import ArgumentParser
import Foundation
import LayerKit

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an image from the store into an OCI image layout.",
        discussion: """
            The layout is created if missing; an existing one keeps its other images, and REF (default:
            the image name's tag, or the name) is replaced in its index.json, which is written last.
            Imported images are written back byte for byte (same manifest digest). --gzip rewrites
            zstd layers as gzip for tools that read only gzip (umoci 0.4): same diffIDs, new manifest.

            Examples:
              layertool export myimage:v2 ./layout
              layertool export --gzip busybox:latest ./for-umoci:latest
              umoci unpack --image ./layout:v2 bundle
            """
    )

    @OptionGroup var store: StoreOptions

    @Flag(help: "Rewrite zstd layers as gzip.")
    var gzip = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: "The image in the store.")
    var image: String

    @Argument(help: ArgumentHelp("The layout dir, and the reference to tag the image with.", valueName: "LAYOUT[:REF]"))
    var layout: String

    func run() throws {
        guard let opened = try store.openExisting() else {
            throw fail(StoreError(.notFound, "no image named \(image.debugDescription) (no layer store at \(store.resolvedRoot))"))
        }
        let (path, reference) = OCIImageLayout.parse(layout)
        let result: ExportResult
        do throws(StoreError) { result = try opened.exportImage(image, to: path, reference: reference, gzipLayers: gzip) } catch {
            throw fail(error)
        }
        if json { return print(Output.json(result)) }
        print([
            "layout     \(result.layout)",
            "reference  \(result.reference)",
            "manifest   \(result.manifest.digest)",
            "blobs      \(result.blobsWritten) written\(result.layersRecompressed > 0 ? ", \(result.layersRecompressed) layers rewritten as gzip" : "")",
        ].joined(separator: "\n"))
    }
}
