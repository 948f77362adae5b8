import Foundation
import LayerKit

/// What a pull into a layer store did.
public struct StorePullResult: Sendable {
    /// The image as resolved (manifest, config, layers).
    public var image: RemoteImage
    /// The store's side: the image record and how each layer got in.
    public var imported: StreamingImportResult
    /// Per layer, bottom first: whether its blob was downloaded (the others were in the store).
    public var downloaded: [Bool] { imported.layers.map(\.wasRead) }
    /// The chainID of the pulled stack; nil for an image without layers.
    public var chainID: Digest? { imported.image.topChainID }
}

extension ImagePuller {
    /// Resolves `reference` and pulls it into `store` as `name` (default: the reference as
    /// written out, `HOST/PATH:TAG`), unpacking while downloading. See `pull(_:into:name:options:progress:)`.
    public func pull(_ reference: ImageReference, into store: LayerStore, name: String? = nil, options: PullOptions = PullOptions(),
                     progress: (@Sendable (PullEvent) -> Void)? = nil) async throws(RegistryError) -> StorePullResult {
        let image = try await client.resolveImage(reference, platform: options.platform)
        progress?(.resolved(image))
        return try await pull(image, into: store, name: name ?? reference.description, options: options, progress: progress)
    }

    /// Pulls an image already resolved into `store` as `name`, all or nothing.
    ///
    /// The store is asked first which layers it lacks (`LayerStore.beginImport`): layers it has
    /// with their blobs are not downloaded at all. The others download at once
    /// (`options.maximumConcurrentDownloads`), each response body going straight into the
    /// store's import (blob digest, inflate, diffID, apply into staging, and the blob's file in
    /// the content dir, in the same pass), bottom layer first; a layer another import adds
    /// meanwhile stops downloading. The manifest and config are stored as received. A digest or
    /// diffID mismatch, a dropped connection that cannot be resumed, or a cancellation commits
    /// nothing: no layer, blob or image record, no staging dir (`StreamingImport`).
    public func pull(_ image: RemoteImage, into store: LayerStore, name: String, options: PullOptions = PullOptions(),
                     progress: (@Sendable (PullEvent) -> Void)? = nil) async throws(RegistryError) -> StorePullResult {
        let reference = image.reference.description
        let incoming: IncomingImage
        do throws(StoreError) {
            incoming = try IncomingImage(manifest: image.manifest.bytes, mediaType: image.manifest.descriptor.mediaType,
                                         expectedDigest: image.manifest.descriptor.digest, config: image.configBytes,
                                         source: "\(image.reference.registry)/\(image.reference.repository)")
        } catch {
            throw RegistryError(store: error, reference: reference)
        }
        let session: StreamingImport
        do throws(StoreError) { session = try await store.beginImport(incoming, name: name) } catch {
            throw RegistryError(store: error, reference: reference)
        }
        progress?(.planned(session.needs))
        let failures = FirstFailure()
        async let downloads: Void = LayerDownloads(client: client, image: image, streams: session.streams,
                                                   concurrency: options.maximumConcurrentDownloads,
                                                   failures: failures, progress: progress).run()
        let imported: Result<StreamingImportResult, StoreError>
        do throws(StoreError) {
            imported = .success(try await session.run { event in
                switch event {
                case .reading: break
                case .committing: progress?(.committing)
                case .unpacked(let layer, let summary): progress?(.applied(layer: layer, summary))
                case .blobStored(let layer): progress?(.blobStored(layer: layer))
                case .dismissed(let layer): progress?(.dismissed(layer: layer))
                }
            })
        } catch {
            imported = .failure(error)
        }
        if case .failure(let error) = imported {
            failures.record(error.isCancellation ? RegistryError(.cancelled, reference: reference, "cancelled")
                                                 : RegistryError(store: error, reference: reference))
        }
        await downloads
        if Task.isCancelled, failures.first == nil || failures.first?.kind == .cancelled {
            throw RegistryError(.cancelled, reference: reference, "interrupted: nothing was added to the store at \(store.root)")
        }
        if let failure = failures.first { throw failure }
        guard case .success(let result) = imported else {
            throw RegistryError(.store, reference: reference, "the import failed")
        }
        return StorePullResult(image: image, imported: result)
    }
}

extension RegistryError {
    /// A store's error during a pull: a layer's (`.unpack`) or the store's own (`.store`).
    init(store error: StoreError, reference: String) {
        if case .layer(let kind) = error.kind {
            self.init(.unpack(kind), error.description)
        } else {
            self.init(.store, reference: reference, error.description)
        }
    }
}
