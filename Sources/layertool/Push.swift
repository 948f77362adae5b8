import ArgumentParser
import Foundation
import LayerKit
import LayerKitRegistry

/// `layertool push IMAGE REF`: an image of the layer store to a registry.
struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push an image of the layer store to a registry; prints the manifest digest.",
        discussion: """
            The blobs are streamed from the store (blobs/sha256/): those the repository has are
            skipped, those another repository of the registry has are mounted (--mount-from), the
            rest are uploaded (in chunks above 64 MiB); the manifest is put last, byte for byte as
            the store keeps it, so its digest is unchanged.

            Example:
              layertool push busybox localhost:5000/busybox:latest
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(name: .customLong("mount-from"), help: ArgumentHelp("A repository of the same registry to mount blobs from instead of uploading them (repeatable).", valueName: "REPO"))
    var mountFrom: [String] = []

    @OptionGroup var registryFlags: RegistryFlags

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The image's name in the store.", valueName: "IMAGE"))
    var image: String

    @Argument(help: ArgumentHelp("Where to push it: [HOST[:PORT]/]PATH[:TAG].", valueName: "REF"))
    var reference: String

    func run() async throws {
        guard let layerStore = try store.openExisting() else {
            throw fail(LayerError(.input, layer: store.resolvedRoot, "no layer store here"))
        }
        let upload: ImageUpload
        do throws(RegistryError) { upload = try ImageUpload.fromStore(layerStore, image: image) } catch {
            throw fail(LayerError(.input, error.description))
        }
        let referenceText = reference, flags = registryFlags, mounts = mountFrom
        let result = try await runRegistryOperation { () throws(RegistryError) -> PushResult in
            let reference = try ImageReference(parsing: referenceText)
            guard reference.digest == nil else {
                throw RegistryError(.invalidReference, reference: referenceText, "push to a tag, not a digest")
            }
            let client = try RegistryClient(registry: reference.registry, options: try flags.clientOptions(for: reference))
            do throws(RegistryError) {
                let result = try await ImagePusher(client: client).push(upload, to: reference, mountFrom: mounts)
                await client.shutdown()
                return result
            } catch {
                await client.shutdown()
                throw error
            }
        }
        if json { return print(Output.json(result)) }
        if Output.stderrIsTerminal {
            for blob in result.blobs {
                FileHandle.standardError.write(Data("\(blob.digest)  \(blob.outcome.rawValue) (\(StoreFormat.bytes(blob.size)))\n".utf8))
            }
        }
        print(result.manifestDigest)
    }
}
