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
    /// (Into a store) what the store needs of each layer, bottom first: layers it has with their
    /// blobs (`.present`) are not downloaded.
    case planned([LayerNeed])
    /// Bytes of layer `layer` received so far (called for every chunk).
    case downloading(layer: Int, received: Int64, total: Int64)
    /// Layer `layer` was received whole and its digest verified.
    case downloaded(layer: Int)
    /// (Into a store) layer `layer` is not downloaded, or its download stopped: another import
    /// added it to the store meanwhile.
    case dismissed(layer: Int)
    /// Layer `layer` was applied (and its digests checked by the unpack too).
    case applied(layer: Int, LayerSummary)
    /// (Into a store) the blob of layer `layer` was stored; the store had the layer itself.
    case blobStored(layer: Int)
    /// (Into a store) every layer is in; the layers and the image are being committed.
    case committing
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
        let streams = image.layers.map { LayerStream(size: $0.descriptor.size, spoolDirectory: spoolDirectory) }
        let inputs = zip(streams, image.layers).map { stream, layer in
            LayerInput(source: .stream(stream), name: "\(image.reference.registry)/\(image.reference.repository)@\(layer.descriptor.digest)",
                       expecting: LayerExpectation(blobDigest: layer.descriptor.digest, diffID: layer.diffID))
        }
        let failures = FirstFailure()
        async let downloads: Void = LayerDownloads(client: client, image: image, streams: streams,
                                                   concurrency: options.maximumConcurrentDownloads,
                                                   failures: failures, progress: progress).run()
        // The unpack runs on a thread of its own (LayerKit's async unpack) and reads each layer's
        // stream as it arrives; a cancelled pull stops it, and closing the streams ends any read
        // it is waiting in.
        let unpacked: Result<[LayerSummary], LayerError> = await withTaskCancellationHandler {
            do throws(LayerError) {
                return .success(try await Unpacker(options: options.apply).unpack(inputs, to: destination) { index, summary in
                    progress?(.applied(layer: index, summary))
                })
            } catch {
                return .failure(error)
            }
        } onCancel: {
            for stream in streams { stream.close(cancelled: true) }
        }
        if case .failure(let error) = unpacked {
            failures.record(error.kind == .cancelled ? RegistryError(.cancelled, reference: name, "cancelled")
                                                     : RegistryError(.unpack(error.kind), error.description))
        }
        // Layers the unpack did not get to: their downloads stop.
        for stream in streams { stream.close() }
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

    static func parentDirectory(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }
}
