import Foundation
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// What a pull does besides the reference and the destination.
public struct PullOptions: Sendable {
    /// Which manifest of an index to pull.
    public var platform: Platform
    /// Layers downloaded at once (the first is unpacked as it arrives, the others spooled until
    /// their turn).
    public var maximumConcurrentDownloads: Int
    /// How layers are applied.
    public var apply: ApplyOptions
    /// Where later layers are spooled while earlier ones are applied (unlinked files); by
    /// default the destination's parent dir.
    public var spoolDirectory: String?

    /// Defaults: this machine's platform, 3 downloads at once, a plain apply, spooling beside the destination.
    public init(platform: Platform = .host, maximumConcurrentDownloads: Int = 3,
                apply: ApplyOptions = ApplyOptions(), spoolDirectory: String? = nil) {
        self.platform = platform
        self.maximumConcurrentDownloads = max(1, maximumConcurrentDownloads)
        self.apply = apply
        self.spoolDirectory = spoolDirectory
    }
}

/// What happens during a pull, for progress displays.
public enum PullEvent: Sendable {
    /// The manifest and config were read.
    case resolved(RemoteImage)
    /// Bytes of layer `layer` received so far (called for every chunk).
    case downloading(layer: Int, received: Int64, total: Int64)
    /// Layer `layer` was received whole and its digest verified.
    case downloaded(layer: Int)
    /// Layer `layer` was applied (and its digests checked by the unpack too).
    case applied(layer: Int, LayerSummary)
}

/// What a pull did.
public struct PullResult: Sendable {
    /// The image as resolved (manifest, config, layers).
    public var image: RemoteImage
    /// Per layer, bottom first, as the unpack saw it.
    public var summaries: [LayerSummary]
    /// The chainID of the pulled stack; nil for an image without layers.
    public var chainID: Digest? { ChainID.of(summaries.map(\.diffID)) }
}

/// Pulls an image into a directory, unpacking while downloading: each layer's response body
/// goes straight into the unpack pipeline (blob digest, inflate, diffID, apply) as it arrives.
///
/// All or nothing, as `Unpacker`: a missing or empty destination is built beside it and renamed
/// into place only when every layer has been applied and both digests checked. A digest or diffID
/// mismatch, a dropped connection that cannot be resumed, a failure of any kind or a cancellation
/// leaves it as it was, and no staging or spool file behind.
public struct ImagePuller: Sendable {
    /// The client for the image's registry (which the caller shuts down).
    public let client: RegistryClient

    /// A puller using `client`.
    public init(client: RegistryClient) { self.client = client }

    /// Resolves `reference` (index, the manifest for `options.platform`, config) and pulls it
    /// into `destination`, all or nothing. `progress` is called from the download tasks and the
    /// unpack thread.
    public func pull(_ reference: ImageReference, to destination: String, options: PullOptions = PullOptions(),
                     progress: (@Sendable (PullEvent) -> Void)? = nil) async throws(RegistryError) -> PullResult {
        let image = try await client.resolveImage(reference, platform: options.platform)
        progress?(.resolved(image))
        return try await pull(image, to: destination, options: options, progress: progress)
    }

    /// Pulls an image already resolved with `RegistryClient.resolveImage`.
    public func pull(_ image: RemoteImage, to destination: String, options: PullOptions = PullOptions(),
                     progress: (@Sendable (PullEvent) -> Void)? = nil) async throws(RegistryError) -> PullResult {
        let name = image.reference.description
        let spoolDirectory = options.spoolDirectory ?? Self.parentDirectory(destination)
        let spools = image.layers.map { LayerSpool(size: $0.descriptor.size, spoolDirectory: spoolDirectory) }
        let feeder = try PipeLayerFeeder(spools: spools)
        let inputs = zip(feeder.sources, image.layers).map { source, layer in
            LayerInput(source: source, name: "\(image.reference.registry)/\(image.reference.repository)@\(layer.descriptor.digest)",
                       expecting: LayerExpectation(blobDigest: layer.descriptor.digest, diffID: layer.diffID))
        }
        let failures = FirstFailure()
        feeder.start()

        async let downloads: Void = download(image, into: spools, concurrency: options.maximumConcurrentDownloads,
                                             failures: failures, progress: progress)
        // The unpack runs on a thread of its own (LayerKit's async unpack); a cancelled pull
        // stops it between chunks, and failing the spools ends any read it is blocked in.
        let unpacked: Result<[LayerSummary], LayerError>
        do {
            let summaries = try await withTaskCancellationHandler {
                try await Unpacker(options: options.apply).unpack(inputs, to: destination) { index, summary in
                    progress?(.applied(layer: index, summary))
                }
            } onCancel: {
                for spool in spools { spool.fail(RegistryError(.cancelled, reference: name, "cancelled")) }
            }
            unpacked = .success(summaries)
        } catch let error as LayerError {
            unpacked = .failure(error)
        } catch {
            unpacked = .failure(LayerError(.input, "\(error)"))
        }
        if case .failure(let error) = unpacked {
            failures.record(error.kind == .cancelled ? RegistryError(.cancelled, reference: name, "cancelled")
                                                     : RegistryError(.unpack(error.kind), error.description))
        }
        feeder.stop()
        await downloads
        if Task.isCancelled, failures.first == nil || failures.first?.kind == .cancelled {
            throw RegistryError(.cancelled, reference: name, "interrupted: nothing was written to \(destination)")
        }
        if let failure = failures.first { throw failure }
        guard case .success(let summaries) = unpacked else {
            throw RegistryError(.unpack(.input), reference: name, "the unpack failed")
        }
        return PullResult(image: image, summaries: summaries)
    }

    /// Downloads the layers into their spools, at most `concurrency` at once, lowest index first.
    /// The first failure fails every spool (which ends the unpack).
    private func download(_ image: RemoteImage, into spools: [LayerSpool], concurrency: Int, failures: FirstFailure,
                          progress: (@Sendable (PullEvent) -> Void)?) async {
        let client = self.client
        let repository = image.reference.repository
        await withTaskGroup(of: Bool.self) { group in
            var next = 0
            func start() {
                let index = next
                next += 1
                let layer = image.layers[index], spool = spools[index]
                group.addTask {
                    let counter = ByteCounter()
                    do throws(RegistryError) {
                        try await client.fetchBlob(layer.descriptor, from: repository) { buffer in
                            try await spool.append(buffer)
                            let received = counter.add(Int64(buffer.readableBytes))
                            progress?(.downloading(layer: index, received: received, total: layer.descriptor.size))
                        }
                        spool.finish()
                        progress?(.downloaded(layer: index))
                        return true
                    } catch {
                        failures.record(error)
                        for spool in spools { spool.fail(error) }
                        return false
                    }
                }
            }
            while next < min(concurrency, spools.count) { start() }
            while let succeeded = await group.next() {
                if !succeeded { group.cancelAll(); continue }
                if next < spools.count && !Task.isCancelled { start() }
            }
        }
    }

    static func parentDirectory(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }
}

/// The first error of a pull, from whichever side (download or unpack) failed first: the
/// other side's failure is its consequence.
final class FirstFailure: @unchecked Sendable {
    private let lock = NSLock()
    private var error: RegistryError?

    func record(_ error: RegistryError) {
        lock.lock()
        if self.error == nil { self.error = error }
        lock.unlock()
    }

    var first: RegistryError? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }
}

/// Bytes received by one download (its sink runs sequentially).
final class ByteCounter: @unchecked Sendable {
    private var total: Int64 = 0
    func add(_ n: Int64) -> Int64 {
        total += n
        return total
    }
}
