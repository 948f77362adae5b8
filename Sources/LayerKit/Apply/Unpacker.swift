import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One layer to unpack: where it comes from, its name in messages, the digests it must have.
public struct LayerInput: Sendable {
    public var source: LayerSource
    public var name: String
    public var expecting: LayerExpectation

    public init(source: LayerSource, name: String? = nil, expecting: LayerExpectation = LayerExpectation()) {
        self.source = source
        self.name = name ?? source.displayName
        self.expecting = expecting
    }
}

/// Applies a stack of layers onto a directory, all or nothing.
///
/// - A destination that is missing or empty is built in a staging dir beside it and renamed into
///   place at the end: a bad layer (corrupt, a breakout, a digest mismatch) leaves it as it was.
/// - A destination that already has content is changed in place, so every layer is first read
///   once in full (digests checked, every entry checked for what the archive alone can get wrong)
///   before anything is written. Standard input is spooled to a temporary file for that.
public struct Unpacker: Sendable {
    public var options: ApplyOptions

    public init(options: ApplyOptions = ApplyOptions()) { self.options = options }

    /// Called after each layer with its index and summary (from the thread doing the work).
    public typealias Progress = @Sendable (_ index: Int, _ summary: LayerSummary) -> Void

    /// Unpacks `layers` onto `destination`, all or nothing (see the type's description).
    public func unpack(_ layers: [LayerInput], to destination: String, progress: Progress? = nil) throws(LayerError) -> [LayerSummary] {
        try unpack(layers, to: destination, progress: progress, cancellation: nil)
    }

    /// Unpacks off the caller's thread. Cancelling the calling Task stops the unpack between
    /// chunks and entries with `.cancelled`, and the destination is left as it was (a missing or
    /// empty one), or with only the layers already applied (one that had content).
    public func unpack(_ layers: [LayerInput], to destination: String, progress: Progress? = nil) async throws(LayerError) -> [LayerSummary] {
        try await BlockingWork.run("layerkit-unpack") { (cancellation) throws(LayerError) -> [LayerSummary] in
            try self.unpack(layers, to: destination, progress: progress, cancellation: cancellation)
        }
    }

    func unpack(_ layers: [LayerInput], to destination: String, progress: Progress?,
                cancellation: CancellationFlag?) throws(LayerError) -> [LayerSummary] {
        StagingDirectory.removeLeftovers(beside: destination)
        var st = stat()
        let exists = lstat(destination, &st) == 0
        if exists && !FileSystem.isDirectory(st) {
            throw LayerError(.input, layer: destination, "the destination exists and is not a directory")
        }
        let empty = try exists ? isEmptyDir(destination) : true
        if !exists || (empty && !isMountPoint(destination)) {
            return try unpackStaged(layers, to: destination, existing: exists ? st : nil, progress: progress, cancellation: cancellation)
        }
        return try unpackInPlace(layers, to: destination, progress: progress, cancellation: cancellation)
    }

    private func unpackStaged(_ layers: [LayerInput], to destination: String, existing: stat?, progress: Progress?,
                              cancellation: CancellationFlag?) throws(LayerError) -> [LayerSummary] {
        let staging = try StagingDirectory(beside: destination)
        // The staging dir becomes the destination: give it the mode and owner the destination has
        // (or would get from mkdir), unless a layer names the root itself.
        if let existing {
            chmod(staging.path, existing.st_mode & 0o7777)
            chown(staging.path, existing.st_uid, existing.st_gid)
        } else {
            chmod(staging.path, 0o755 & ~FileSystem.currentUmask())
        }
        let summaries = try applyAll(layers, to: staging.path, options: options, progress: progress, cancellation: cancellation)
        try staging.commit(to: destination)
        return summaries
    }

    private func unpackInPlace(_ layers: [LayerInput], to destination: String, progress: Progress?,
                               cancellation: CancellationFlag?) throws(LayerError) -> [LayerSummary] {
        // First pass: read everything, check digests and entries. Nothing is written yet.
        // Standard input (read once) is kept beside the destination for the second pass.
        var spool: StagingDirectory? = nil
        var inputs = layers
        for i in inputs.indices {
            if case .fileDescriptor(let fd) = inputs[i].source {
                if spool == nil { spool = try StagingDirectory(beside: destination, kind: "stdin-") }
                let file = spool!.path + "/\(i)"
                try Self.copy(fd, to: file, name: inputs[i].name)
                inputs[i].source = .path(file)
            } else if case .stream(let stream) = inputs[i].source {
                // Read once, as it arrives, into a file for both passes.
                if spool == nil { spool = try StagingDirectory(beside: destination, kind: "stdin-") }
                let file = spool!.path + "/\(i)"
                try stream.copy(to: file, name: inputs[i].name, cancellation: cancellation)
                inputs[i].source = .path(file)
            }
            try cancellation?.check()
            _ = try LayerApplier(options: options).inspect(inputs[i].source, name: inputs[i].name, validate: true, expecting: inputs[i].expecting)
        }
        // Files are written under temporary names and renamed into place: an error (a full
        // disk) never leaves a partial file under a real name among the existing content.
        var inPlace = options
        inPlace.writesFilesAtomically = true
        return try applyAll(inputs, to: destination, options: inPlace, progress: progress, cancellation: cancellation)
    }

    private func applyAll(_ layers: [LayerInput], to directory: String, options: ApplyOptions, progress: Progress?,
                          cancellation: CancellationFlag?) throws(LayerError) -> [LayerSummary] {
        let applier = LayerApplier(options: options)
        let rootFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot open target directory \(directory)") }
        defer { close(rootFD) }
        var summaries = [LayerSummary]()
        for (i, layer) in layers.enumerated() {
            let summary = try applier.apply(layer.source, rootFD: rootFD, name: layer.name, expecting: layer.expecting,
                                            copyingBlobTo: nil, cancellation: cancellation)
            summaries.append(summary)
            progress?(i, summary)
        }
        return summaries
    }

    /// Copies everything `fd` gives into a new file.
    private static func copy(_ fd: Int32, to path: String, name: String) throws(LayerError) {
        let out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot create a temporary file").inLayer(name) }
        defer { close(out) }
        do throws(Errno) { try DataCopy.copyAll(from: fd, to: out) } catch {
            throw LayerError(.input, layer: name, "cannot read: \(error.description)")
        }
    }

    private func isEmptyDir(_ path: String) throws(LayerError) -> Bool {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot open \(path)") }
        defer { close(fd) }
        do throws(Errno) { return try FileSystem.names(of: fd).isEmpty } catch {
            throw LayerError.system(error, entry: nil, "cannot read \(path)")
        }
    }

    private func isMountPoint(_ path: String) -> Bool {
        var a = stat(), b = stat()
        guard stat(path, &a) == 0, stat(path + "/..", &b) == 0 else { return false }
        return a.st_dev != b.st_dev || a.st_ino == b.st_ino
    }
}

extension Unpacker {
    /// Flattens an image onto `destination`, all or nothing like `unpack`: the image `reference`
    /// (nil: the only one, or `latest`) of an OCI layout dir or of a `docker save` tarball (an
    /// archive is extracted beside the destination for the unpack and removed after). Every blob
    /// is checked against its digest, size and diffID.
    public func unpackImage(at path: String, reference: String? = nil, to destination: String,
                            progress: Progress? = nil) throws(ImageError) -> [LayerSummary] {
        try unpackImage(at: path, reference: reference, to: destination, progress: progress, cancellation: nil)
    }

    /// `unpackImage` off the caller's thread, cancellable like `unpack`.
    public func unpackImage(at path: String, reference: String? = nil, to destination: String,
                            progress: Progress? = nil) async throws(ImageError) -> [LayerSummary] {
        try await BlockingWork.run("layerkit-unpack") { (cancellation) throws(ImageError) -> [LayerSummary] in
            try self.unpackImage(at: path, reference: reference, to: destination, progress: progress, cancellation: cancellation)
        }
    }

    /// The layers `unpackImage` would unpack, named `PATH@DIGEST`.
    public static func inputs(of image: ResolvedImage, at path: String) -> [LayerInput] {
        image.layers.map { LayerInput(source: $0.source, name: "\(path)@\($0.descriptor.digest)", expecting: LayerExpectation($0.descriptor, diffID: $0.diffID)) }
    }

    func unpackImage(at path: String, reference: String?, to destination: String, progress: Progress?,
                     cancellation: CancellationFlag?) throws(ImageError) -> [LayerSummary] {
        var layout = OCIImageLayout(path: path)
        var reference = reference
        var extraction: StagingDirectory? = nil
        defer { withExtendedLifetime(extraction) {} }
        if DockerArchive.isArchive(path) {
            StagingDirectory.removeLeftovers(beside: destination)
            do throws(LayerError) { extraction = try StagingDirectory(beside: destination, kind: "archive-") } catch {
                throw ImageError(source: path, error)
            }
            let extracted = try DockerArchive.extract(path, into: extraction!.path + "/image", reference: reference)
            layout = extracted.layout
            reference = extracted.reference
        }
        let resolved = try layout.resolve(reference)
        do throws(LayerError) {
            return try unpack(Self.inputs(of: resolved, at: path), to: destination, progress: progress, cancellation: cancellation)
        } catch {
            throw ImageError(source: path, error)
        }
    }
}
