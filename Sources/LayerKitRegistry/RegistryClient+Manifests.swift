import AsyncHTTPClient
import Foundation
import LayerKit
import NIOHTTP1

/// A manifest or index as the registry sent it, checked against its digest.
public struct FetchedManifest: Sendable {
    /// Media type (from `Content-Type`, or the JSON's `mediaType`), digest and size of `bytes`.
    public var descriptor: Descriptor
    /// The bytes as received (their sha256 is `descriptor.digest`).
    public var bytes: [UInt8]
}

extension RegistryClient {
    /// GET a manifest by tag or digest, accepting the OCI index and manifest and Docker's list and
    /// schema 2 manifest. Refuses Docker schema 1 and manifests over 4 MiB; checks the digest
    /// against `Docker-Content-Digest` and against the digest asked for.
    public func fetchManifest(_ reference: ImageReference, scope: AuthScope? = nil) async throws(RegistryError) -> FetchedManifest {
        let name = reference.description
        var request = Request(method: .GET, url: manifestPath(reference), scope: scope ?? .pull(reference.repository), reference: name)
        request.headers.add(name: "Accept", value: ManifestAcceptance.accepted.joined(separator: ", "))
        let response = try await send(request)
        guard response.status == .ok else {
            throw await error(from: response, reference: name, notFound: "manifest unknown")
        }
        if let length = response.headers.first(name: "Content-Length").flatMap(Int64.init), length > Self.maximumManifestSize {
            throw RegistryError(.unsupported, reference: name, "the manifest is \(length) bytes, over the 4 MiB limit")
        }
        let bytes: [UInt8]
        do { bytes = try await Self.collect(response.body, limit: Self.maximumManifestSize) } catch {
            if error.kind == .protocolViolation {
                throw RegistryError(.unsupported, reference: name, "the manifest is over the 4 MiB limit")
            }
            throw error.about(name)
        }
        let mediaType = try Self.manifestMediaType(contentType: response.headers.first(name: "Content-Type"), bytes: bytes, reference: name)
        let digest = Digest.sha256(of: bytes)
        if let wanted = reference.digest, wanted != digest {
            throw RegistryError(.digestMismatch, reference: name, "the manifest received hashes to \(digest)")
        }
        if let header = response.headers.first(name: "Docker-Content-Digest"), header.hasPrefix("sha256:") {
            guard let claimed = try? Digest(parsing: header) else {
                throw RegistryError(.protocolViolation, reference: name, "invalid Docker-Content-Digest header")
            }
            guard claimed == digest else {
                throw RegistryError(.digestMismatch, reference: name, "the registry says the manifest is \(claimed) but it hashes to \(digest)")
            }
        }
        return FetchedManifest(descriptor: Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count)), bytes: bytes)
    }

    /// HEAD a manifest: its descriptor as the registry states it (digest from
    /// `Docker-Content-Digest`), or nil when it does not exist.
    public func headManifest(_ reference: ImageReference, scope: AuthScope? = nil) async throws(RegistryError) -> Descriptor? {
        let name = reference.description
        var request = Request(method: .HEAD, url: manifestPath(reference), scope: scope ?? .pull(reference.repository), reference: name)
        request.headers.add(name: "Accept", value: ManifestAcceptance.accepted.joined(separator: ", "))
        let response = try await send(request)
        if response.status == .notFound { return nil }
        guard response.status == .ok else { throw await error(from: response, reference: name, notFound: "manifest unknown") }
        let mediaType = Self.baseMediaType(response.headers.first(name: "Content-Type") ?? "")
        if ManifestAcceptance.isSchema1(mediaType) { throw Self.schema1Error(name) }
        guard let header = response.headers.first(name: "Docker-Content-Digest"), let digest = try? Digest(parsing: header) else {
            if let wanted = reference.digest, let size = response.headers.first(name: "Content-Length").flatMap(Int64.init) {
                return Descriptor(mediaType: mediaType, digest: wanted, size: size)
            }
            throw RegistryError(.protocolViolation, reference: name, "no usable Docker-Content-Digest header in the answer to HEAD")
        }
        if let wanted = reference.digest, wanted != digest {
            throw RegistryError(.digestMismatch, reference: name, "the registry answers for \(digest)")
        }
        let size = response.headers.first(name: "Content-Length").flatMap(Int64.init) ?? -1
        return Descriptor(mediaType: mediaType, digest: digest, size: size)
    }

    /// PUT a manifest under `reference`'s tag (or digest). Returns its digest, checked against
    /// the registry's `Docker-Content-Digest`.
    @discardableResult
    public func putManifest(_ bytes: [UInt8], mediaType: String, to reference: ImageReference) async throws(RegistryError) -> Digest {
        let name = reference.description
        let digest = Digest.sha256(of: bytes)
        var request = Request(method: .PUT, url: manifestPath(reference), body: .bytes(bytes), scope: .push(reference.repository), reference: name)
        request.headers.add(name: "Content-Type", value: mediaType)
        let response = try await send(request)
        guard response.status == .created || response.status == .ok else {
            throw await error(from: response, reference: name)
        }
        _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
        if let header = response.headers.first(name: "Docker-Content-Digest"), let claimed = try? Digest(parsing: header), claimed != digest {
            throw RegistryError(.digestMismatch, reference: name, "the registry stored the manifest as \(claimed), not \(digest)")
        }
        return digest
    }

    func manifestPath(_ reference: ImageReference) -> String {
        "/v2/\(reference.repository)/manifests/\(reference.manifestReference)"
    }

    static func baseMediaType(_ contentType: String) -> String {
        String(contentType.prefix { $0 != ";" }).trimmingCharacters(in: .whitespaces).lowercased()
    }

    static func schema1Error(_ name: String) -> RegistryError {
        RegistryError(.unsupported, reference: name, "a Docker schema 1 manifest, which is not supported (deprecated since 2017: push the image again with a current client)")
    }

    private struct MediaTypeProbe: Decodable {
        var schemaVersion: Int?
        var mediaType: String?
        var manifests: [Descriptor]?
    }

    /// The manifest's media type from `Content-Type`, or from the JSON when the header is
    /// missing or generic; schema 1 and unknown types refused.
    static func manifestMediaType(contentType: String?, bytes: [UInt8], reference: String) throws(RegistryError) -> String {
        let probe = try? JSONDecoder().decode(MediaTypeProbe.self, from: Data(bytes))
        guard let probe else { throw RegistryError(.protocolViolation, reference: reference, "the manifest is not JSON") }
        var mediaType = baseMediaType(contentType ?? "")
        if ManifestAcceptance.isSchema1(mediaType) || probe.schemaVersion == 1 { throw schema1Error(reference) }
        if !ManifestAcceptance.accepted.contains(mediaType) {
            if let declared = probe.mediaType { mediaType = declared }
            else if probe.manifests != nil { mediaType = MediaType.ociIndex }
            else { mediaType = MediaType.ociManifest }
        }
        guard ManifestAcceptance.accepted.contains(mediaType) else {
            throw RegistryError(.unsupported, reference: reference, "unsupported manifest media type \(RegistryErrorResponse.sanitize(mediaType, limit: 100))")
        }
        if let declared = probe.mediaType, declared != mediaType {
            throw RegistryError(.protocolViolation, reference: reference, "the manifest says it is \(RegistryErrorResponse.sanitize(declared, limit: 100)) but was served as \(mediaType)")
        }
        return mediaType
    }
}
