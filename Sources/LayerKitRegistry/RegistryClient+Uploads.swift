import AsyncHTTPClient
import Foundation
import LayerKit
import NIOHTTP1

/// How a blob got into the repository.
public enum BlobUploadOutcome: String, Sendable, Codable {
    /// The repository had it already (HEAD).
    case present
    /// Mounted from another repository of the registry, without sending it.
    case mounted
    /// Sent.
    case uploaded
}

extension RegistryClient {
    /// Makes the repository hold the blob stored in the file at `path`: nothing when it has it
    /// already, a cross-repository mount when one of `mountFrom` has it, else an upload: POST
    /// then one PUT with the file for blobs up to `monolithicUploadLimit`, POST + PATCH chunks of
    /// `uploadChunkSize` + PUT above. The file is streamed, never read into memory whole.
    public func pushBlob(_ descriptor: Descriptor, fromFile path: String, to repository: String,
                         mountFrom: [String] = []) async throws(RegistryError) -> BlobUploadOutcome {
        let name = "\(registry)/\(repository)@\(descriptor.digest)"
        let scope = AuthScope.push(repository)
        if try await blobExists(descriptor.digest, in: repository, scope: scope) { return .present }
        var session: String? = nil
        for source in mountFrom where source != repository && session == nil {
            let mountScope = scope.addingPull(source)
            let query = "mount=\(Self.queryEscape(descriptor.digest.description))&from=\(Self.queryEscape(source))"
            let request = Request(method: .POST, url: "/v2/\(repository)/blobs/uploads/?\(query)", headers: ["Content-Length": "0"],
                                  scope: mountScope, reference: name)
            let response = try await send(request)
            switch response.status {
            case .created:
                _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
                return .mounted
            case .accepted:
                // Not mountable (the source lacks it, or no access): the registry opened an upload.
                _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
                session = try uploadLocation(response, reference: name)
            default:
                throw await error(from: response, reference: name)
            }
        }
        var attempt = 1
        while true {
            do {
                try await upload(descriptor, path: path, repository: repository, session: session, reference: name)
                return .uploaded
            } catch {
                session = nil
                let restartable = error.isTransient || error.code == "BLOB_UPLOAD_UNKNOWN" || error.code == "BLOB_UPLOAD_INVALID"
                guard restartable, attempt < options.retry.maximumAttempts else { throw error }
                logger.info("blob upload failed, starting it again", metadata: ["blob": "\(descriptor.digest)", "error": "\(error.message)"])
                try await pause(options.retry.delay(after: attempt, retryAfter: nil), reference: name)
                attempt += 1
            }
        }
    }

    private func upload(_ descriptor: Descriptor, path: String, repository: String, session: String?, reference name: String) async throws(RegistryError) {
        let scope = AuthScope.push(repository)
        var location: String
        var minimumChunk: Int64 = 0
        if let session {
            location = session
        } else {
            let request = Request(method: .POST, url: "/v2/\(repository)/blobs/uploads/", headers: ["Content-Length": "0"], scope: scope, reference: name)
            let response = try await send(request)
            guard response.status == .accepted else { throw await error(from: response, reference: name) }
            _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
            location = try uploadLocation(response, reference: name)
            minimumChunk = response.headers.first(name: "OCI-Chunk-Min-Length").flatMap(Int64.init) ?? 0
        }
        let size = descriptor.size
        let octets: HTTPHeaders = ["Content-Type": "application/octet-stream"]
        if size > options.monolithicUploadLimit {
            let chunk = max(options.uploadChunkSize, minimumChunk, 1)
            var offset: Int64 = 0
            while offset < size {
                let length = min(chunk, size - offset)
                var headers = octets
                headers.add(name: "Content-Range", value: "\(offset)-\(offset + length - 1)")
                let request = Request(method: .PATCH, url: location, headers: headers,
                                      body: .file(path: path, offset: offset, length: length), scope: scope, reference: name, deadline: nil)
                let response = try await send(request)
                guard response.status == .accepted || response.status == .noContent else { throw await error(from: response, reference: name) }
                _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
                if let range = response.headers.first(name: "Range"), let end = Self.rangeEnd(range), end != offset + length - 1 {
                    throw RegistryError(.protocolViolation, reference: name, status: Int(response.status.code),
                                        "the registry holds bytes 0-\(end) after a chunk ending at \(offset + length - 1)")
                }
                location = try uploadLocation(response, reference: name)
                offset += length
            }
            let request = Request(method: .PUT, url: Self.appendingDigest(location, descriptor.digest), headers: ["Content-Length": "0"],
                                  scope: scope, reference: name)
            try await finishUpload(request, descriptor: descriptor, reference: name)
        } else {
            let request = Request(method: .PUT, url: Self.appendingDigest(location, descriptor.digest), headers: octets,
                                  body: .file(path: path, offset: 0, length: size), scope: scope, reference: name, deadline: nil)
            try await finishUpload(request, descriptor: descriptor, reference: name)
        }
    }

    private func finishUpload(_ request: Request, descriptor: Descriptor, reference name: String) async throws(RegistryError) {
        let response = try await send(request)
        guard response.status == .created || response.status == .noContent || response.status == .accepted else {
            throw await error(from: response, reference: name)
        }
        _ = try? await Self.collect(response.body, limit: RegistryErrorResponse.maximumBodySize)
        if let header = response.headers.first(name: "Docker-Content-Digest"), let stored = try? Digest(parsing: header), stored != descriptor.digest {
            throw RegistryError(.digestMismatch, reference: name, "the registry stored the blob as \(stored)")
        }
    }

    /// The upload URL from `Location` (relative to the registry, or absolute).
    private func uploadLocation(_ response: HTTPClientResponse, reference: String) throws(RegistryError) -> String {
        guard let location = response.headers.first(name: "Location"), !location.isEmpty else {
            throw RegistryError(.protocolViolation, reference: reference, status: Int(response.status.code), "no Location for the upload")
        }
        if location.hasPrefix("/") { return baseURL + location }
        guard let url = URL(string: location), url.scheme != nil else {
            throw RegistryError(.protocolViolation, reference: reference, "an invalid upload Location")
        }
        return location
    }

    static func appendingDigest(_ location: String, _ digest: Digest) -> String {
        location + (location.contains("?") ? "&" : "?") + "digest=" + queryEscape(digest.description)
    }

    static func queryEscape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~/")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// `0-END` (or `bytes=0-END`) → END.
    static func rangeEnd(_ header: String) -> Int64? {
        var text = Substring(header.trimmingCharacters(in: .whitespaces))
        if text.hasPrefix("bytes=") { text = text.dropFirst(6) }
        guard let dash = text.firstIndex(of: "-") else { return nil }
        return Int64(text[text.index(after: dash)...])
    }
}
