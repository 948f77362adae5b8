import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where a layer blob comes from.
public enum LayerSource: Sendable {
    /// A file on disk.
    case path(String)
    /// An open file descriptor (for example 0 for standard input); it is read to its end, not closed.
    case fileDescriptor(Int32)
}

/// What was learned about a layer while reading it.
public struct LayerSummary: Sendable, Codable, Equatable {
    /// sha256 of the blob as stored (compressed).
    public var blobDigest: Digest
    /// sha256 of the uncompressed tar.
    public var diffID: Digest
    /// The compression found in the blob's first bytes.
    public var compression: Compression
    /// Bytes of the blob as stored.
    public var blobSize: Int64
    /// Bytes of the uncompressed tar, including anything after its end-of-archive marker.
    public var tarSize: Int64
    /// Tar entries (whiteouts included).
    public var entryCount: Int
    /// Things skipped without failing: xattrs the file system refused, sockets, ...
    public var warnings: [String]
}

/// Digests a layer is expected to have; a mismatch fails the apply.
public struct LayerExpectation: Sendable, Equatable {
    public var blobDigest: Digest?
    public var diffID: Digest?
    public init(blobDigest: Digest? = nil, diffID: Digest? = nil) {
        self.blobDigest = blobDigest
        self.diffID = diffID
    }
}

/// Applies layer blobs (tar, tar+gzip, tar+zstd) onto directories, computing the blob digest and
/// the diffID in the same pass.
///
/// Decompression and hashing run on one thread, tar parsing and file creation on the caller's:
/// on two cores an unpack takes about the longer of the two, not their sum.
public struct LayerApplier: Sendable {
    public var options: ApplyOptions

    public init(options: ApplyOptions = ApplyOptions()) {
        self.options = options
    }

    /// Applies `source` onto the directory `target` (which must exist).
    ///
    /// - Parameters:
    ///   - name: how the layer is named in errors (defaults to the path, or `-`).
    ///   - expecting: digests to check; a mismatch throws `.digestMismatch`. The changes are then
    ///     already made: callers that must leave the target untouched apply into a staging dir
    ///     (as `layertool unpack` and the store do).
    public func apply(_ source: LayerSource, to target: String, name: String? = nil,
                      expecting: LayerExpectation = LayerExpectation()) throws(LayerError) -> LayerSummary {
        let layerName = name ?? source.displayName
        let rootFD = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else {
            throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot open target directory \(target)").inLayer(layerName)
        }
        defer { close(rootFD) }
        return try apply(source, rootFD: rootFD, name: layerName, expecting: expecting)
    }

    /// Applies `source` onto the directory open at `rootFD`.
    public func apply(_ source: LayerSource, rootFD: Int32, name: String,
                      expecting: LayerExpectation = LayerExpectation()) throws(LayerError) -> LayerSummary {
        do throws(LayerError) {
            let engine = ApplyEngine(rootFD: rootFD, options: options)
            var summary = try Self.run(source, expectedBlobDigest: expecting.blobDigest) { (stream, entry) throws(LayerError) in
                while try stream.next(entry) {
                    try engine.apply(entry, from: stream.archive)
                }
                try engine.finish()
            }
            summary.entryCount = engine.entryCount
            summary.warnings = engine.warnings
            try Self.check(summary, expecting)
            return summary
        } catch {
            throw error.inLayer(name)
        }
    }

    /// Reads a layer to its end and returns its digests, sizes and entry count, writing nothing.
    /// With `validate`, entries that an apply would reject for what they say (escaping names,
    /// bad whiteouts) fail the inspection too.
    public static func inspect(_ source: LayerSource, name: String? = nil, validate: Bool = false,
                               expecting: LayerExpectation = LayerExpectation()) throws(LayerError) -> LayerSummary {
        do throws(LayerError) {
            var count = 0
            var summary = try run(source, expectedBlobDigest: expecting.blobDigest) { (stream, entry) throws(LayerError) in
                while try stream.next(entry) {
                    count += 1
                    if validate { try ApplyEngine.preflight(entry) }
                    let rc = archive_read_data_skip(stream.archive)
                    if rc < ARCHIVE_WARN { throw stream.context.upstreamError ?? LayerError(.corruptArchive, "tar: " + TarStream.errorString(stream.archive)) }
                }
            }
            summary.entryCount = count
            try check(summary, expecting)
            return summary
        } catch {
            throw error.inLayer(name ?? source.displayName)
        }
    }

    static func check(_ summary: LayerSummary, _ expecting: LayerExpectation) throws(LayerError) {
        if let want = expecting.blobDigest, want != summary.blobDigest {
            throw LayerError(.digestMismatch, "digest mismatch: expected \(want), got \(summary.blobDigest)")
        }
        if let want = expecting.diffID, want != summary.diffID {
            throw LayerError(.digestMismatch, "diffID mismatch: expected \(want), got \(summary.diffID)")
        }
    }

    /// The pipeline: a producer thread feeding `consume`, which runs on the calling thread.
    static func run(_ source: LayerSource, expectedBlobDigest: Digest? = nil,
                    _ consume: (TarStream, OpaquePointer) throws(LayerError) -> Void) throws(LayerError) -> LayerSummary {
        let fd: Int32
        var ownsFD = false
        switch source {
        case .path(let path):
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw LayerError(.input, "cannot open: \(Errno(rawValue: errno).description)")
            }
            ownsFD = true
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        case .fileDescriptor(let given):
            fd = given
        }
        defer { if ownsFD { close(fd) } }

        let pipe = ChunkPipe()
        let gzip = BlobProducer.GzipImplementation(rawValue: ProcessInfo.processInfo.environment["LAYERKIT_GZIP"] ?? "") ?? .isal
        let producer = BlobProducer(fd: fd, pipe: pipe, gzip: gzip, expectedBlobDigest: expectedBlobDigest)
        producer.start()

        // libarchive converts names to the thread's locale; UTF-8 keeps them byte-exact.
        let utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil)
        let previous = utf8.map { uselocale($0) }
        defer {
            if let previous { uselocale(previous) }
            if let utf8 { freelocale(utf8) }
        }

        var failure: LayerError?
        do throws(LayerError) {
            let stream = try TarStream(pipe: pipe)
            guard let entry = archive_entry_new() else { throw LayerError(.input, "libarchive: out of memory") }
            defer { archive_entry_free(entry) }
            try consume(stream, entry)
            try stream.drain()
        } catch {
            failure = error
        }
        if let failure {
            if expectedBlobDigest != nil, failure.kind == .corruptArchive || failure.kind == .pathEscapes || failure.kind == .invalidEntry {
                // Read on to the end: a blob that is not the expected one is reported as such.
                while let chunk = try? pipe.next() { pipe.recycle(chunk) }
            } else {
                pipe.close()
            }
        }
        producer.wait()
        // The producer's error (truncated or corrupt compressed data) explains a tar error it caused.
        if let upstream = producer.error { throw upstream }
        if let failure {
            if let want = expectedBlobDigest, let got = producer.blobDigest, got != want {
                throw LayerError(.digestMismatch, "digest mismatch: expected \(want), got \(got) (and the content is bad: \(failure.description))")
            }
            throw failure
        }
        guard let blobDigest = producer.blobDigest, let diffID = producer.diffID ?? pipe.sharedDigest() else {
            throw LayerError(.input, "the layer was not read to its end")
        }
        return LayerSummary(blobDigest: blobDigest, diffID: diffID, compression: producer.compression,
                            blobSize: producer.blobSize, tarSize: producer.tarSize, entryCount: 0, warnings: [])
    }
}

extension LayerSource {
    var displayName: String {
        switch self {
        case .path(let p): return p
        case .fileDescriptor(0): return "-"
        case .fileDescriptor(let fd): return "fd \(fd)"
        }
    }
}
