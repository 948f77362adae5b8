import ArgumentParser
import Foundation
import LayerKit

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the images, layers or containers of the layer store.",
        discussion: """
            Sizes are bytes on disk of the layers' diff dirs; an image's size counts all its layers,
            including those it shares with other images. A layer's IMAGES column names the images
            using it ("-": none; gc removes it).

            Examples:
              layertool ls
              layertool ls layers --json
            """
    )

    enum What: String, ExpressibleByArgument, CaseIterable {
        case images, layers, containers
    }

    @OptionGroup var store: StoreOptions

    @Flag(help: "Print the list as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("What to list.", valueName: "images|layers|containers"))
    var what: What = .images

    struct ImageRecord: Encodable {
        var name: String
        var chainID: Digest?
        var manifestDigest: Digest
        var configDigest: Digest
        var layers: [Digest]
        var size: Int64
        var created: String
    }

    struct LayerRecord: Encodable {
        var chainID: Digest
        var diffID: Digest
        var blobDigest: Digest?
        var mediaType: String?
        var parent: Digest?
        var link: String
        var size: Int64
        var images: [String]
        var created: String
    }

    struct ContainerRecord: Encodable {
        var id: String
        var image: String?
        var chainID: Digest?
        var driver: MountDriver
        var mountpoint: String?
        var state: ContainerState
        var readOnly: Bool
        /// Bytes on disk of its upper dir (its changes).
        var size: Int64
        var created: String
    }

    func run() throws {
        let opened = try store.openExisting()
        do throws(StoreError) {
            switch what {
            case .images: try listImages(opened)
            case .layers: try listLayers(opened)
            case .containers: try listContainers(opened)
            }
        } catch {
            throw fail(error)
        }
    }

    private func listImages(_ store: LayerStore?) throws(StoreError) {
        let records = try (store?.images() ?? []).map {
            ImageRecord(name: $0.name, chainID: $0.topChainID, manifestDigest: $0.manifestDigest, configDigest: $0.configDigest,
                        layers: $0.chainIDs, size: $0.size, created: StoreFormat.date($0.created))
        }
        if json { return print(Output.json(records)) }
        print(StoreFormat.table(["NAME", "CHAIN ID", "LAYERS", "SIZE", "CREATED"], records.map {
            [$0.name, StoreFormat.short($0.chainID), "\($0.layers.count)", StoreFormat.bytes($0.size), $0.created]
        }))
    }

    private func listLayers(_ store: LayerStore?) throws(StoreError) {
        var users = [Digest: [String]]()
        for image in try store?.images() ?? [] {
            for id in image.chainIDs { users[id, default: []].append(image.name) }
        }
        let records = try (store?.layers() ?? []).map {
            LayerRecord(chainID: $0.chainID, diffID: $0.diffID, blobDigest: $0.blobDigest, mediaType: $0.mediaType, parent: $0.parent,
                        link: $0.link, size: $0.size, images: users[$0.chainID] ?? [], created: StoreFormat.date($0.created))
        }
        if json { return print(Output.json(records)) }
        print(StoreFormat.table(["CHAIN ID", "DIFF ID", "PARENT", "SIZE", "IMAGES"], records.map {
            [StoreFormat.short($0.chainID), StoreFormat.short($0.diffID), StoreFormat.short($0.parent), StoreFormat.bytes($0.size),
             $0.images.isEmpty ? "-" : $0.images.joined(separator: ",")]
        }))
    }

    private func listContainers(_ store: LayerStore?) throws(StoreError) {
        for stale in try store?.reconcileMounts() ?? [] {
            FileHandle.standardError.write(Data("layertool: \(stale.description)\n".utf8))
        }
        var records = [ContainerRecord]()
        for c in try store?.containers() ?? [] {
            records.append(ContainerRecord(id: c.id, image: c.image, chainID: c.chainID, driver: c.driver, mountpoint: c.mountpoint,
                                           state: c.state, readOnly: c.readOnly, size: try store!.changesSize(of: c.id),
                                           created: StoreFormat.date(c.created)))
        }
        if json { return print(Output.json(records)) }
        print(StoreFormat.table(["ID", "IMAGE", "CHAIN ID", "DRIVER", "STATE", "SIZE", "MOUNTPOINT"], records.map {
            [$0.id, $0.image ?? "-", StoreFormat.short($0.chainID), $0.driver.rawValue, $0.state.rawValue + ($0.readOnly ? " (ro)" : ""),
             StoreFormat.bytes($0.size), $0.mountpoint ?? "-"]
        }))
    }
}
