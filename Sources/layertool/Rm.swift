import ArgumentParser
import Foundation
import LayerKit

struct Rm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove images or containers from the layer store (gc then removes layers no longer used).",
        discussion: """
            An image's record goes (its layers stay until gc finds them unused). A container's record
            and dirs go, its upper dir with its uncommitted changes included; a mounted container is
            refused unless --force, which unmounts it first. All or nothing: if one NAME is unknown,
            nothing is removed.
            """
    )

    @OptionGroup var store: StoreOptions

    @Flag(name: [.short, .long], help: "Unmount mounted containers before removing them.")
    var force = false

    @Argument(help: ArgumentHelp("Names of images or IDs of containers to remove.", valueName: "IMAGE|CONTAINER"))
    var images: [String]

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("name at least one IMAGE") }
    }

    func run() throws {
        guard let opened = try store.openExisting() else {
            throw fail(StoreError(.notFound, "no image named \(images[0].debugDescription) (no layer store at \(store.resolvedRoot))"))
        }
        var imageNames = [String](), containerIDs = [String]()
        do throws(StoreError) {
            for name in images {
                let isImage = try opened.image(named: name) != nil
                let isContainer = try opened.container(name).map { $0.id == name } ?? false
                if isImage && isContainer {
                    throw StoreError(.invalidArgument, "\(name.debugDescription) is both an image and a container: remove one with the other renamed")
                }
                if isContainer { containerIDs.append(name) } else { imageNames.append(name) }
            }
            for id in containerIDs where !force {
                if let container = try opened.container(id), container.isMounted {
                    throw StoreError(.invalidArgument, "container \(id) is mounted at \(container.mountpoint ?? "?"): umount it first (or --force)")
                }
            }
            // Images first: an unknown name fails there, before any container is touched.
            try opened.removeImages(imageNames)
            try opened.removeContainers(containerIDs, force: force)
        } catch {
            throw fail(error)
        }
        for name in imageNames { print("removed image \(name)") }
        for id in containerIDs { print("removed container \(id)") }
    }
}
