import ArgumentParser
import Foundation
import LayerKit
import LayerKitRegistry

/// `layertool pull REF DEST`: an image from a registry, flattened into DEST while it downloads;
/// `layertool pull REF` (no DEST): imported into the layer store, the same way.
struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull an image from a registry into the layer store, or flatten it into a directory, unpacking while downloading.",
        discussion: """
            REF is [HOST[:PORT]/]PATH[:TAG][@sha256:HEX] (docker.io and library/ by default, tag latest).
            An index is resolved to this machine's platform, or --platform. Each layer's bytes go
            straight into the unpack as they arrive (blob digest, inflate, diffID, apply); later
            layers download meanwhile and wait their turn in a spool file.

            Without DEST, into the layer store (--root) as NAME (default: REF written out in full):
            layers the store has are not downloaded at all; the others are unpacked into staging
            while their blobs are written into the store's blobs/ from the same bytes; the
            manifest and config are kept as they came. Nothing is committed until every layer is
            in: a failure or Ctrl-C leaves no layer, blob or image record behind.

            With DEST, all or nothing as unpack: a DEST that is missing or empty is built beside it
            and moved into place only when every layer has been applied and verified. A digest
            mismatch, a dropped connection that cannot be resumed, or Ctrl-C leaves DEST as it was.

            Credentials: --creds, else the first auth file with an entry for the registry among
            --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.

            Examples:
              layertool pull localhost:5000/busybox:latest
              layertool pull --name app --root /var/lib/myruntime registry.example/team/app:v2
              layertool pull localhost:5000/busybox:latest rootfs/
              layertool pull --platform linux/arm64 --creds me:secret registry.example/team/app:v2 rootfs/
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(help: ArgumentHelp("The image's name in the store (default: REF in full, HOST/PATH:TAG).", valueName: "NAME"))
    var name: String?

    @Option(help: ArgumentHelp("The platform to pick from an index (default: this machine's).", valueName: "OS/ARCH[/VARIANT]"))
    var platform: String?

    @Option(name: .customLong("max-concurrent-downloads"), help: ArgumentHelp("Layers downloaded at once.", valueName: "N"))
    var maxConcurrentDownloads: Int = 3

    @Option(help: ArgumentHelp("Threads that create small files beside the one parsing each layer (0: all on one thread).", valueName: "N"))
    var applyWorkers: Int = ApplyOptions.defaultApplyWorkers

    @OptionGroup var registryFlags: RegistryFlags

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The image to pull.", valueName: "REF"))
    var reference: String

    @Argument(help: ArgumentHelp("A directory to flatten the image into, instead of importing it into the store.", valueName: "DEST"))
    var destination: String?

    func validate() throws {
        guard maxConcurrentDownloads >= 1 && maxConcurrentDownloads <= 64 else {
            throw ValidationError("--max-concurrent-downloads is 1 to 64")
        }
        guard (0...64).contains(applyWorkers) else { throw ValidationError("--apply-workers is 0 to 64") }
        if destination != nil && (store.root != nil || name != nil) {
            throw ValidationError("--root and --name are for pulling into the store, not with DEST")
        }
    }

    /// One layer in the JSON summary.
    struct LayerRecord: Encodable {
        var digest: Digest
        var size: Int64
        var diffID: Digest
        var chainID: Digest
        /// Whether its blob was downloaded (false: the store had it).
        var downloaded: Bool
        /// How it got into the store: present, appeared, unpacked, blob-added.
        var outcome: StreamingImportResult.Outcome
        /// Bytes on disk of its layer dir.
        var diskSize: Int64
    }

    struct StoreRecord: Encodable {
        var reference: String
        var name: String
        var root: String
        var manifestDigest: Digest
        var configDigest: Digest
        var platform: String?
        var chainID: Digest?
        var seconds: Double
        var downloadedBytes: Int64
        var layers: [LayerRecord]
    }

    struct Record: Encodable {
        var reference: String
        var manifestDigest: Digest
        var configDigest: Digest
        var platform: String?
        var destination: String
        var chainID: Digest?
        var seconds: Double
        var layers: [Output.LayerRecord]
    }

    func run() async throws {
        let referenceText = reference, platformText = platform, flags = registryFlags
        var applyOptions = ToolEnvironment.applyOptions()
        applyOptions.applyWorkers = applyWorkers
        let baseOptions = PullOptions(maximumConcurrentDownloads: maxConcurrentDownloads, apply: applyOptions)
        let progress = PullProgress()
        var storeConfiguration = ToolEnvironment.storeConfiguration()
        storeConfiguration.applyWorkers = applyWorkers
        let layerStore: LayerStore? = destination == nil ? try store.open(configuration: storeConfiguration) : nil
        let destination = self.destination, storeName = name
        let outcome = try await runRegistryOperation { () throws(RegistryError) -> PullOutcome in
            let reference = try ImageReference(parsing: referenceText)
            var pullOptions = baseOptions
            pullOptions.platform = try platformText.map { (text) throws(RegistryError) in try Platform(parsing: text) } ?? .host
            let client = try RegistryClient(registry: reference.registry, options: try flags.clientOptions(for: reference))
            do throws(RegistryError) {
                let puller = ImagePuller(client: client)
                let outcome: PullOutcome
                if let layerStore {
                    outcome = .store(try await puller.pull(reference, into: layerStore, name: storeName, options: pullOptions,
                                                           progress: { progress.handle($0) }))
                } else {
                    outcome = .directory(try await puller.pull(reference, to: destination!, options: pullOptions, progress: { progress.handle($0) }))
                }
                await client.shutdown()
                return outcome
            } catch {
                await client.shutdown()
                throw error
            }
        }
        progress.finish()
        Output.endProgress()
        let seconds = (progress.elapsed * 1000).rounded() / 1000
        switch outcome {
        case .store(let result): report(result, root: layerStore!.root, seconds: seconds)
        case .directory(let result): report(result, destination: destination!, seconds: seconds)
        }
    }

    enum PullOutcome: Sendable {
        case store(StorePullResult)
        case directory(PullResult)
    }

    private static func platformName(_ image: RemoteImage) -> String? {
        image.platform.map { [$0.os, $0.architecture, $0.variant].compactMap { $0 }.joined(separator: "/") }
    }

    private func report(_ result: StorePullResult, root: String, seconds: Double) {
        let image = result.image
        let layers = result.imported.layers.map { layer in
            LayerRecord(digest: layer.blobDigest, size: layer.blobSize, diffID: layer.diffID, chainID: layer.chainID,
                        downloaded: layer.wasRead, outcome: layer.outcome, diskSize: layer.size)
        }
        if json {
            let downloaded = layers.filter(\.downloaded).reduce(Int64(0)) { $0 + $1.size }
            print(Output.json(StoreRecord(reference: image.reference.description, name: result.imported.image.name, root: root,
                                          manifestDigest: image.manifest.descriptor.digest, configDigest: image.parsedManifest.config.digest,
                                          platform: Self.platformName(image), chainID: result.chainID, seconds: seconds,
                                          downloadedBytes: downloaded, layers: layers)))
            return
        }
        var lines = [
            "image     \(result.imported.image.name)",
            "manifest  \(image.manifest.descriptor.digest)",
        ]
        if let platform = Self.platformName(image) { lines.append("platform  \(platform)") }
        for (i, layer) in layers.enumerated() {
            let state: String
            switch layer.outcome {
            case .present: state = "already present, not downloaded"
            case .appeared: state = "added by another pull meanwhile"
            case .unpacked: state = "downloaded and unpacked (\(StoreFormat.bytes(layer.diskSize)))"
            case .blobAdded: state = "layer present, blob downloaded"
            }
            lines.append("layer \(i + 1)   \(layer.digest)  \(StoreFormat.bytes(layer.size))  \(state)")
        }
        lines.append("chainID   \(result.chainID.map { $0.description } ?? "none (no layers)")")
        print(lines.joined(separator: "\n"))
    }

    private func report(_ result: PullResult, destination: String, seconds: Double) {
        let image = result.image
        let names = image.layers.map { "\(image.reference.registry)/\(image.reference.repository)@\($0.descriptor.digest)" }
        if json {
            print(Output.json(Record(reference: image.reference.description, manifestDigest: image.manifest.descriptor.digest,
                                     configDigest: image.parsedManifest.config.digest, platform: Self.platformName(image),
                                     destination: destination, chainID: result.chainID, seconds: seconds,
                                     layers: Output.records(result.summaries, names: names))))
            return
        }
        print("image     \(image.reference)")
        print("manifest  \(image.manifest.descriptor.digest)")
        if let platform = Self.platformName(image) { print("platform  \(platform)") }
        for (summary, name) in zip(result.summaries, names) { print(Output.human(summary, name: name)) }
        if let chain = result.chainID { print("chainID \(chain)") }
    }
}
