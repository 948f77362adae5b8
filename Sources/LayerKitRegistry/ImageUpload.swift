import Foundation
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// An image to push: its manifest as bytes (pushed as they are, so the digest is kept) and the
/// files holding its config and layer blobs.
public struct ImageUpload: Sendable {
    /// A blob and the file that holds it.
    public struct Blob: Sendable {
        /// What the blob is (its digest and size are checked by the registry), and its file.
        public var descriptor: Descriptor
        public var path: String
        public init(descriptor: Descriptor, path: String) {
            self.descriptor = descriptor
            self.path = path
        }
    }

    /// The manifest, byte for byte (its digest is the image's in the registry).
    public var manifest: [UInt8]
    public var manifestMediaType: String
    /// The config first, then the layers, bottom first.
    public var blobs: [Blob]

    public init(manifest: [UInt8], manifestMediaType: String, blobs: [Blob]) {
        self.manifest = manifest
        self.manifestMediaType = manifestMediaType
        self.blobs = blobs
    }

    /// Image `name` of a layer store: its manifest, config and layer blobs as the store keeps
    /// them (`blobs/sha256/`), each file checked to exist with the descriptor's size.
    public static func fromStore(_ store: LayerStore, image name: String) throws(RegistryError) -> ImageUpload {
        let record: StoredImage?
        do { record = try store.image(named: name) } catch {
            throw RegistryError(.configuration, reference: store.root, error.description)
        }
        guard let record else { throw RegistryError(.notFound, reference: store.root, "no image named \(name.debugDescription) in the store") }
        let manifestBytes: [UInt8]
        do { manifestBytes = try store.readBlob(record.manifestDigest) } catch {
            throw RegistryError(.configuration, reference: name, "the store cannot read the manifest: \(error.description)")
        }
        let manifest: ImageManifest
        do { manifest = try JSONDecoder().decode(ImageManifest.self, from: Data(manifestBytes)) } catch {
            throw RegistryError(.configuration, reference: name, "the stored manifest \(record.manifestDigest) is not an image manifest")
        }
        let mediaType = manifest.mediaType ?? MediaType.ociManifest
        guard MediaType.isManifest(mediaType) else {
            throw RegistryError(.unsupported, reference: name, "the stored manifest has media type \(mediaType)")
        }
        var blobs = [Blob]()
        for descriptor in [manifest.config] + manifest.layers {
            let path = store.paths.blob(descriptor.digest)
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
                throw RegistryError(.configuration, reference: name, "the store has no blob file for \(descriptor.digest)")
            }
            guard Int64(st.st_size) == descriptor.size else {
                throw RegistryError(.digestMismatch, reference: name, "the store's blob \(descriptor.digest) is \(st.st_size) bytes, the manifest says \(descriptor.size)")
            }
            blobs.append(Blob(descriptor: descriptor, path: path))
        }
        return ImageUpload(manifest: manifestBytes, manifestMediaType: mediaType, blobs: blobs)
    }
}

/// What a push did.
public struct PushResult: Sendable, Codable {
    /// One blob and how it got there.
    public struct BlobResult: Sendable, Codable {
        public var digest: Digest
        public var size: Int64
        public var outcome: BlobUploadOutcome
    }
    /// The reference pushed to.
    public var reference: String
    /// The manifest's digest (the image's immutable name in the registry).
    public var manifestDigest: Digest
    /// Every blob (config first), once each.
    public var blobs: [BlobResult]
}

/// Pushes an image: every blob first (skipping those the repository has, mounting those another
/// repository has, uploading the rest, several at once), the manifest last, so the tag never
/// names an image with missing blobs.
public struct ImagePusher: Sendable {
    /// The client for the target registry (which the caller shuts down).
    public let client: RegistryClient

    /// A pusher using `client`.
    public init(client: RegistryClient) { self.client = client }

    /// Pushes `image` to `reference` (a tag): blobs first, up to `maximumConcurrentUploads` at
    /// once, trying a mount from each of `mountFrom` before uploading; the manifest last.
    public func push(_ image: ImageUpload, to reference: ImageReference, mountFrom: [String] = [],
                     maximumConcurrentUploads: Int = 3) async throws(RegistryError) -> PushResult {
        let client = self.client
        let repository = reference.repository
        var outcomes = [Digest: BlobUploadOutcome]()
        var unique = [ImageUpload.Blob]()
        for blob in image.blobs where !unique.contains(where: { $0.descriptor.digest == blob.descriptor.digest }) { unique.append(blob) }
        let results: [(Digest, BlobUploadOutcome)]
        do {
            results = try await withThrowingTaskGroup(of: (Digest, BlobUploadOutcome).self) { group in
                var next = 0
                var collected = [(Digest, BlobUploadOutcome)]()
                func start() {
                    let blob = unique[next]
                    next += 1
                    group.addTask {
                        (blob.descriptor.digest, try await client.pushBlob(blob.descriptor, fromFile: blob.path, to: repository, mountFrom: mountFrom))
                    }
                }
                while next < min(max(1, maximumConcurrentUploads), unique.count) { start() }
                while let result = try await group.next() {
                    collected.append(result)
                    if next < unique.count { start() }
                }
                return collected
            }
        } catch let error as RegistryError {
            throw error
        } catch {
            throw RegistryError(.cancelled, reference: reference.description, "cancelled")
        }
        for (digest, outcome) in results { outcomes[digest] = outcome }
        let digest = try await client.putManifest(image.manifest, mediaType: image.manifestMediaType, to: reference)
        return PushResult(reference: reference.description, manifestDigest: digest,
                          blobs: unique.map { PushResult.BlobResult(digest: $0.descriptor.digest, size: $0.descriptor.size, outcome: outcomes[$0.descriptor.digest] ?? .uploaded) })
    }
}
