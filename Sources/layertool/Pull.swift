import ArgumentParser
import Foundation
import LayerKit
import LayerKitRegistry

/// `layertool pull REF DEST`: an image from a registry, flattened into DEST while it downloads.
struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull an image from a registry and flatten it into a directory, unpacking while downloading.",
        discussion: """
            REF is [HOST[:PORT]/]PATH[:TAG][@sha256:HEX] (docker.io and library/ by default, tag latest).
            An index is resolved to this machine's platform, or --platform. Each layer's bytes go
            straight into the unpack as they arrive (blob digest, inflate, diffID, apply); later
            layers download meanwhile and wait their turn in a spool file.

            All or nothing, as unpack: a DEST that is missing or empty is built beside it and moved
            into place only when every layer has been applied and verified. A digest mismatch, a
            dropped connection that cannot be resumed, or Ctrl-C leaves DEST as it was.

            Credentials: --creds, else the first auth file with an entry for the registry among
            --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.

            Examples:
              layertool pull localhost:5000/busybox:latest rootfs/
              layertool pull --platform linux/arm64 --creds me:secret registry.example/team/app:v2 rootfs/
            """
    )

    @Option(help: ArgumentHelp("The platform to pick from an index (default: this machine's).", valueName: "OS/ARCH[/VARIANT]"))
    var platform: String?

    @Option(name: .customLong("max-concurrent-downloads"), help: ArgumentHelp("Layers downloaded at once.", valueName: "N"))
    var maxConcurrentDownloads: Int = 3

    @OptionGroup var registryFlags: RegistryFlags

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The image to pull.", valueName: "REF"))
    var reference: String

    @Argument(help: ArgumentHelp("The directory to flatten the image into (pulling into the store is not there yet).", valueName: "DEST"))
    var destination: String?

    func validate() throws {
        guard destination != nil else {
            throw ValidationError("give DEST: pulling into the layer store (pull REF without DEST) is not implemented yet")
        }
        guard maxConcurrentDownloads >= 1 && maxConcurrentDownloads <= 64 else {
            throw ValidationError("--max-concurrent-downloads is 1 to 64")
        }
    }

    struct Record: Encodable {
        var reference: String
        var manifestDigest: Digest
        var configDigest: Digest
        var platform: String?
        var destination: String
        var chainID: Digest?
        var layers: [Output.LayerRecord]
    }

    func run() async throws {
        let destination = self.destination!
        let referenceText = reference, platformText = platform, flags = registryFlags
        let concurrency = maxConcurrentDownloads
        let meter = TransferMeter(verb: "pulling")
        let result = try await runRegistryOperation { () throws(RegistryError) -> PullResult in
            let reference = try ImageReference(parsing: referenceText)
            let selector = try platformText.map { (text) throws(RegistryError) in try Platform(parsing: text) } ?? .host
            let client = try RegistryClient(registry: reference.registry, options: try flags.clientOptions(for: reference))
            do throws(RegistryError) {
                let result = try await ImagePuller(client: client).pull(
                    reference, to: destination, options: PullOptions(platform: selector, maximumConcurrentDownloads: concurrency)
                ) { event in
                    switch event {
                    case .resolved(let image): meter.setLayers(image.layers.map(\.descriptor.size))
                    case .downloading(let layer, let received, _): meter.update(layer: layer, received: received)
                    case .downloaded: break
                    case .applied: meter.layerApplied()
                    }
                }
                await client.shutdown()
                return result
            } catch {
                await client.shutdown()
                throw error
            }
        }
        Output.endProgress()
        let image = result.image
        let names = image.layers.map { "\(image.reference.registry)/\(image.reference.repository)@\($0.descriptor.digest)" }
        let platformName = image.platform.map { [$0.os, $0.architecture, $0.variant].compactMap { $0 }.joined(separator: "/") }
        if json {
            print(Output.json(Record(reference: image.reference.description, manifestDigest: image.manifest.descriptor.digest,
                                     configDigest: image.parsedManifest.config.digest, platform: platformName, destination: destination,
                                     chainID: result.chainID, layers: Output.records(result.summaries, names: names))))
            return
        }
        print("image     \(image.reference)")
        print("manifest  \(image.manifest.descriptor.digest)")
        if let platformName { print("platform  \(platformName)") }
        for (summary, name) in zip(result.summaries, names) { print(Output.human(summary, name: name)) }
        if let chain = result.chainID { print("chainID \(chain)") }
    }
}
