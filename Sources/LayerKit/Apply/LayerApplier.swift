import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

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
    ///   - source: the blob.
    ///   - target: the directory to write into.
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
        try apply(source, rootFD: rootFD, name: name, expecting: expecting, copyingBlobTo: nil, cancellation: nil)
    }

    /// Applies `source` onto the directory `target`, off the caller's thread; cancelling the
    /// calling Task stops it between chunks and entries with `.cancelled`.
    public func apply(_ source: LayerSource, to target: String, name: String? = nil,
                      expecting: LayerExpectation = LayerExpectation()) async throws(LayerError) -> LayerSummary {
        let layerName = name ?? source.displayName
        return try await BlockingWork.run("layerkit-apply") { (cancellation) throws(LayerError) -> LayerSummary in
            let rootFD = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard rootFD >= 0 else {
                throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot open target directory \(target)").inLayer(layerName)
            }
            defer { close(rootFD) }
            return try apply(source, rootFD: rootFD, name: layerName, expecting: expecting, copyingBlobTo: nil, cancellation: cancellation)
        }
    }

    /// The apply, with the blob's bytes also written to `copyFD` as they are read (the store keeps
    /// exactly the bytes it verified) and a flag checked between chunks and entries.
    func apply(_ source: LayerSource, rootFD: Int32, name: String, expecting: LayerExpectation,
               copyingBlobTo copyFD: Int32?, cancellation: CancellationFlag?) throws(LayerError) -> LayerSummary {
        do throws(LayerError) {
            let engine = try ApplyEngine(rootFD: rootFD, options: options, cancellation: cancellation)
            let settings = LayerPipeline.Settings(expecting: expecting, gzip: options.gzipDecoder, copyFD: copyFD, cancellation: cancellation)
            var summary = try LayerPipeline.read(source, settings) { (stream, entry) throws(LayerError) in
                do throws(LayerError) {
                    while try stream.next(entry) {
                        try engine.apply(entry, from: stream.archive)
                    }
                } catch {
                    do throws(LayerError) { try engine.settle() } catch let earlier {
                        // A file of an entry before the failure could not be made: that is the
                        // failure, as when files are made serially (not what cut libarchive off
                        // further on, which the pipeline would otherwise report).
                        stream.context.upstreamError = nil
                        throw earlier
                    }
                    throw error
                }
                try engine.finish()
            }
            summary.entryCount = engine.entryCount
            summary.warnings = engine.warnings
            summary.allocatedBytes = engine.allocatedBytes
            try Self.check(summary, expecting)
            return summary
        } catch {
            throw error.inLayer(name)
        }
    }

    /// Reads a layer to its end and returns its digests, sizes and entry count, writing nothing.
    /// With `validate`, entries that an apply would reject for what they say (escaping names,
    /// bad whiteouts) fail the inspection too.
    public func inspect(_ source: LayerSource, name: String? = nil, validate: Bool = false,
                        expecting: LayerExpectation = LayerExpectation()) throws(LayerError) -> LayerSummary {
        do throws(LayerError) {
            var count = 0
            var summary = try LayerPipeline.read(source, LayerPipeline.Settings(expecting: expecting, gzip: options.gzipDecoder)) { (stream, entry) throws(LayerError) in
                while try stream.next(entry) {
                    count += 1
                    if validate { try EntryValidator.preflight(entry) }
                    let rc = archive_read_data_skip(stream.archive)
                    if rc < ARCHIVE_WARN { throw stream.context.upstreamError ?? LayerError(.corruptArchive, "tar: " + TarReader.errorString(stream.archive)) }
                }
            }
            summary.entryCount = count
            try Self.check(summary, expecting)
            return summary
        } catch {
            throw error.inLayer(name ?? source.displayName)
        }
    }

    static func check(_ summary: LayerSummary, _ expecting: LayerExpectation) throws(LayerError) {
        if let want = expecting.blobDigest, want != summary.blobDigest {
            throw LayerError(.digestMismatch, "digest mismatch: the blob does not match \(want)")
        }
        if let want = expecting.diffID, want != summary.diffID {
            throw LayerError(.digestMismatch, "diffID mismatch: the uncompressed layer does not match \(want)")
        }
    }
}
