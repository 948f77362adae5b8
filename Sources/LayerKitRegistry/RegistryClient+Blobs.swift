import Foundation
import AsyncHTTPClient
import LayerKit
import NIOCore
import NIOHTTP1

/// Receives a blob's bytes, in order, as they arrive. An error it throws ends the download.
public typealias BlobSink = @Sendable (ByteBuffer) async throws -> Void

extension RegistryClient {
    /// Streams the blob `descriptor` names to `sink`, chunk by chunk as it arrives.
    ///
    /// - Redirects (to object stores) are followed without credentials when they leave the
    ///   registry's host.
    /// - A connection that drops (or ends early) is resumed with `Range: bytes=N-` from the byte
    ///   it stopped at, `maximumResumes` times; a registry that ignores `Range` is read past the
    ///   bytes already delivered.
    /// - Never more than `descriptor.size` bytes are read or passed on.
    /// - Returns only when every byte hashed to `descriptor.digest`: a sink that commits anything
    ///   must wait for the return (the bytes it saw are unverified until then).
    public func fetchBlob(_ descriptor: Descriptor, from repository: String, scope: AuthScope? = nil,
                         into sink: BlobSink) async throws(RegistryError) {
        let name = "\(registry)/\(repository)@\(descriptor.digest)"
        guard descriptor.size >= 0 else { throw RegistryError(.protocolViolation, reference: name, "negative blob size") }
        var hasher = SHA256Hasher()
        var received: Int64 = 0
        var resumes = 0
        while true {
            var request = Request(method: .GET, url: "/v2/\(repository)/blobs/\(descriptor.digest)",
                                  scope: scope ?? .pull(repository), reference: name, deadline: nil)
            request.headers.add(name: "Accept-Encoding", value: "identity")
            if received > 0 { request.headers.add(name: "Range", value: "bytes=\(received)-") }
            let response: HTTPClientResponse
            do { response = try await send(request) } catch {
                // send has already retried what it could.
                throw error
            }
            var skip: Int64 = 0
            switch response.status {
            case .ok:
                skip = received
            case .partialContent:
                guard let range = response.headers.first(name: "Content-Range"), let start = Self.rangeStart(range), start == received else {
                    throw RegistryError(.protocolViolation, reference: name, status: 206, "a resumed download starts at the wrong offset")
                }
            default:
                throw await error(from: response, reference: name, notFound: "blob unknown")
            }
            if let length = response.headers.first(name: "Content-Length").flatMap(Int64.init), length - skip > descriptor.size - received {
                throw RegistryError(.digestMismatch, reference: name, "the registry sends \(length) bytes for a blob of \(descriptor.size)")
            }
            var dropped: RegistryError? = nil
            do {
                for try await var buffer in response.body {
                    if skip > 0 {
                        let n = Int(min(skip, Int64(buffer.readableBytes)))
                        buffer.moveReaderIndex(forwardBy: n)
                        skip -= Int64(n)
                        if buffer.readableBytes == 0 { continue }
                    }
                    guard received + Int64(buffer.readableBytes) <= descriptor.size else {
                        throw RegistryError(.digestMismatch, reference: name, "the registry sends more than the \(descriptor.size) bytes the descriptor gives")
                    }
                    buffer.withUnsafeReadableBytes { hasher.update($0) }
                    received += Int64(buffer.readableBytes)
                    do { try await sink(buffer) } catch {
                        throw SinkFailure(error: error)
                    }
                }
            } catch let failure as SinkFailure {
                if let registryError = failure.error as? RegistryError { throw registryError.about(name) }
                if failure.error is CancellationError || Task.isCancelled { throw RegistryError(.cancelled, reference: name, "cancelled") }
                throw RegistryError(.transport, reference: name, "the receiver failed: \(failure.error)")
            } catch let error as RegistryError {
                throw error
            } catch {
                dropped = redactor.clean(Self.transportError(error, reference: name))
            }
            if let dropped, dropped.kind == .cancelled || Task.isCancelled {
                throw RegistryError(.cancelled, reference: name, "cancelled")
            }
            if received == descriptor.size && skip == 0 {
                let digest = hasher.finalize()
                guard digest == descriptor.digest else {
                    throw RegistryError(.digestMismatch, reference: name, "the blob received hashes to \(digest)")
                }
                return
            }
            // Dropped, or ended early: resume from `received`.
            resumes += 1
            let reason = dropped?.message ?? "the connection ended after \(received) of \(descriptor.size) bytes"
            guard resumes <= options.maximumResumes else {
                throw RegistryError(.transport, reference: name, "download failed after \(received) of \(descriptor.size) bytes and \(resumes - 1) resumes: \(reason)")
            }
            logger.info("blob download interrupted, resuming", metadata: ["blob": "\(descriptor.digest)", "offset": "\(received)", "reason": "\(reason)"])
            try await pause(options.retry.delay(after: resumes, retryAfter: nil), reference: name)
        }
    }

    /// A small blob (an image config) read whole into memory, refused above `limit` bytes.
    public func fetchBlobBytes(_ descriptor: Descriptor, from repository: String, limit: Int = RegistryClient.maximumConfigSize,
                               scope: AuthScope? = nil) async throws(RegistryError) -> [UInt8] {
        guard descriptor.size <= Int64(limit) else {
            throw RegistryError(.unsupported, reference: "\(registry)/\(repository)@\(descriptor.digest)",
                                "the blob is \(descriptor.size) bytes, over the \(limit)-byte limit for what is read into memory")
        }
        let collector = ByteCollector()
        try await fetchBlob(descriptor, from: repository, scope: scope) { buffer in collector.append(buffer) }
        return collector.bytes
    }

    /// HEAD a blob: whether the repository has it.
    public func blobExists(_ digest: Digest, in repository: String, scope: AuthScope? = nil) async throws(RegistryError) -> Bool {
        let name = "\(registry)/\(repository)@\(digest)"
        let request = Request(method: .HEAD, url: "/v2/\(repository)/blobs/\(digest)", scope: scope ?? .pull(repository), reference: name)
        let response = try await send(request)
        switch response.status {
        case .ok: return true
        case .notFound: return false
        default: throw await error(from: response, reference: name)
        }
    }

    /// `bytes START-END/TOTAL` → START.
    static func rangeStart(_ header: String) -> Int64? {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.hasPrefix("bytes ") else { return nil }
        let range = text.dropFirst(6)
        guard let dash = range.firstIndex(of: "-") else { return nil }
        return Int64(range[..<dash])
    }
}

/// Marks an error thrown by the sink, so it is not taken for a dropped connection.
private struct SinkFailure: Error {
    var error: any Error
}

/// Collects a small blob's chunks (the sink is called sequentially, never concurrently).
final class ByteCollector: @unchecked Sendable {
    private(set) var bytes = [UInt8]()
    func append(_ buffer: ByteBuffer) { bytes += buffer.readableBytesView }
}
