import Foundation
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

    /// Called after each layer with its index and summary.
    public typealias Progress = (_ index: Int, _ summary: LayerSummary) -> Void

    public func unpack(_ layers: [LayerInput], to destination: String, progress: Progress? = nil) throws(LayerError) -> [LayerSummary] {
        var st = stat()
        let exists = lstat(destination, &st) == 0
        if exists && !FileSystem.isDirectory(st) {
            throw LayerError(.input, layer: destination, "the destination exists and is not a directory")
        }
        let empty = try exists ? isEmptyDir(destination) : true
        if !exists || (empty && !isMountPoint(destination)) {
            return try unpackStaged(layers, to: destination, existing: exists ? st : nil, progress: progress)
        }
        return try unpackInPlace(layers, to: destination, progress: progress)
    }

    private func unpackStaged(_ layers: [LayerInput], to destination: String, existing: stat?, progress: Progress?) throws(LayerError) -> [LayerSummary] {
        let (dir, base) = FileSystem.split(destination)
        var template = Array("\(dir)/.\(base).layertool-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot create a staging directory in \(dir)").inLayer(destination)
        }
        let staging = String(cString: made)
        var committed = false
        defer { if !committed { try? FileSystem.removeTree(atPath: staging) } }

        // The staging dir becomes the destination: give it the mode and owner the destination has
        // (or would get from mkdir), unless a layer names the root itself.
        if let existing {
            chmod(staging, existing.st_mode & 0o7777)
            chown(staging, existing.st_uid, existing.st_gid)
        } else {
            chmod(staging, 0o755 & ~FileSystem.currentUmask())
        }
        let summaries = try applyAll(layers, to: staging, progress: progress)
        // rename(2) replaces an empty dir atomically.
        if rename(staging, destination) != 0 {
            throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot move the unpacked tree into place").inLayer(destination)
        }
        committed = true
        return summaries
    }

    private func unpackInPlace(_ layers: [LayerInput], to destination: String, progress: Progress?) throws(LayerError) -> [LayerSummary] {
        // First pass: read everything, check digests and entries. Nothing is written yet.
        var spooled = [String]()
        defer { for f in spooled { unlink(f) } }
        var inputs = layers
        for i in inputs.indices {
            if case .fileDescriptor(let fd) = inputs[i].source {
                let file = try spool(fd, name: inputs[i].name)
                spooled.append(file)
                inputs[i].source = .path(file)
            }
            _ = try LayerApplier(options: options).inspect(inputs[i].source, name: inputs[i].name, validate: true, expecting: inputs[i].expecting)
        }
        return try applyAll(inputs, to: destination, progress: progress)
    }

    private func applyAll(_ layers: [LayerInput], to directory: String, progress: Progress?) throws(LayerError) -> [LayerSummary] {
        let applier = LayerApplier(options: options)
        var summaries = [LayerSummary]()
        for (i, layer) in layers.enumerated() {
            let summary = try applier.apply(layer.source, to: directory, name: layer.name, expecting: layer.expecting)
            summaries.append(summary)
            progress?(i, summary)
        }
        return summaries
    }

    private func spool(_ fd: Int32, name: String) throws(LayerError) -> String {
        let tmp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array("\(tmp)/layertool-stdin-XXXXXX".utf8CString)
        let out = mkstemp(&template)
        guard out >= 0 else { throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot create a temporary file").inLayer(name) }
        defer { close(out) }
        let path = String(cString: template)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer, 1 << 20)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { unlink(path); throw LayerError(.input, layer: name, "read error: \(Errno(rawValue: errno).description)") }
            if n == 0 { break }
            var done = 0
            while done < n {
                let w = write(out, buffer + done, n - done)
                if w < 0 { unlink(path); throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot spool standard input").inLayer(name) }
                done += w
            }
        }
        return path
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
