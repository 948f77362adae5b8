import ArgumentParser
import Foundation
import LayerKit

struct Rm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove images from the layer store (their records; gc removes layers no longer used).",
        discussion: "All or nothing: if one IMAGE is not in the store, none is removed."
    )

    @OptionGroup var store: StoreOptions

    @Argument(help: ArgumentHelp("Names of images to remove.", valueName: "IMAGE"))
    var images: [String]

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("name at least one IMAGE") }
    }

    func run() throws {
        guard let opened = try store.openExisting() else {
            throw fail(StoreError(.notFound, "no image named \(images[0].debugDescription) (no layer store at \(store.resolvedRoot))"))
        }
        do throws(StoreError) { try opened.removeImages(images) } catch { throw fail(error) }
        for name in images { print("removed image \(name)") }
    }
}
