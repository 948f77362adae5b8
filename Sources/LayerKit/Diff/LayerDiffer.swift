import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where the changes of a new layer come from.
public enum ChangeSource: Sendable {
    /// Two full trees: the layer turns OLD into NEW.
    case trees(old: String, new: String)
    /// An upper dir: kernel overlayfs's (char device 0/0 whiteouts, `*.overlay.opaque` dirs) or the
    /// aufs form the userspace fallback writes (`.wh.NAME`, `.wh..wh..opq`); both are read.
    case upper(String)
}

/// How a layer is written.
public struct DiffOptions: Sendable {
    public var compression: Compression
    /// gzip: 1...9 (mapped onto ISA-L's levels: 1 → 1, 2–6 → 2, 7–9 → 3); zstd: 1...19.
    /// nil: gzip 6, zstd 3.
    public var level: Int?
    /// Clamp every mtime to this (seconds since the epoch), for reproducible builds.
    public var sourceDateEpoch: Int64?
    /// Compare the contents of files whose size and mtime are equal, even when the mtime has a
    /// sub-second part (without this, only whole-second mtimes, as tar-extracted files have, are compared).
    public var compareContents: Bool
    /// Which xattrs a layer carries (the same policy as applying: no `trusted.*`, no `user.overlay.*`,
    /// `security.selinux` only when asked).
    public var xattrPolicy: ApplyOptions
    /// Compression threads (both cores by default).
    public var threads: Int
    /// `fsync` the output file before renaming it into place (a store that records the layer
    /// needs it; a command writing a file, like tar or zstd, does not by default).
    public var syncOutput: Bool = false
    /// Stream entries to the writer during the walk where every entry is a change (the output is
    /// the same byte for byte); off only to compare the two paths.
    var streamFullLayers = ProcessInfo.processInfo.environment["LAYERKIT_DIFF_STREAMING"] != "0"

    public init(compression: Compression = .gzip, level: Int? = nil, sourceDateEpoch: Int64? = nil,
                compareContents: Bool = false, xattrPolicy: ApplyOptions = ApplyOptions(), threads: Int = 2) {
        self.compression = compression
        self.level = level
        self.sourceDateEpoch = sourceDateEpoch
        self.compareContents = compareContents
        self.xattrPolicy = xattrPolicy
        self.threads = threads
    }

    /// The OCI media type of the layer.
    public var mediaType: String { "application/vnd.oci.image.layer.v1.tar" + compression.mediaTypeSuffix }
}

/// A written layer: its OCI descriptor (media type, blob digest, size) and its diffID.
public struct DiffResult: Sendable, Codable, Equatable {
    public var descriptor: Descriptor
    public var diffID: Digest
    /// Bytes of the uncompressed tar.
    public var tarSize: Int64
    /// Tar entries written (whiteouts included).
    public var entryCount: Int
    public var warnings: [String]
}

/// Turns changes into a layer blob: the tar written on the calling thread while another thread
/// (or two, for gzip) compresses; the diffID and blob digest are computed on the way.
public struct LayerDiffer: Sendable {
    public var options: DiffOptions

    public init(options: DiffOptions = DiffOptions()) { self.options = options }

    /// Writes the layer to `path` (through a temporary name beside it, renamed at the end: on
    /// failure no partial file is left). `-` writes to standard output.
    public func write(_ source: ChangeSource, toFile path: String) throws(LayerError) -> DiffResult {
        if path == "-" { return try write(source, to: 1) }
        var existing = stat()
        if stat(path, &existing) == 0 && FS.fileType(existing) != mode_t(LK_S_IFREG) {
            // A device, fifo or socket (`-o /dev/null`, a pipe): write into it, never rename over it.
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw LayerError(.system(Errno(rawValue: errno)), layer: path, "cannot open the output: \(Errno(rawValue: errno).description)")
            }
            defer { close(fd) }
            do throws(LayerError) { return try write(source, to: fd) } catch { throw error.inLayer(path) }
        }
        let (dir, base) = FS.split(path)
        var template = Array("\(dir)/.\(base).tmp-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else {
            throw LayerError(.system(Errno(rawValue: errno)), layer: path, "cannot create the output file: \(Errno(rawValue: errno).description)")
        }
        let temp = String(cString: template)
        var done = false
        defer {
            close(fd)
            if !done { unlink(temp) }
        }
        fchmod(fd, 0o644 & ~ApplyEngine.currentUmask())
        var result: DiffResult
        do throws(LayerError) {
            result = try write(source, to: fd)
            if options.syncOutput && fsync(fd) != 0 { throw LayerError(.system(Errno(rawValue: errno)), "cannot sync the output: \(Errno(rawValue: errno).description)") }
            if rename(temp, path) != 0 { throw LayerError(.system(Errno(rawValue: errno)), "cannot rename the output into place: \(Errno(rawValue: errno).description)") }
        } catch {
            throw error.inLayer(path)
        }
        done = true
        return result
    }

    /// Writes the layer to an open file descriptor.
    public func write(_ source: ChangeSource, to outputFD: Int32) throws(LayerError) -> DiffResult {
        let newPath: String
        var oldPath: String? = nil
        switch source {
        case .trees(let old, let new): oldPath = old; newPath = new
        case .upper(let upper): newPath = upper
        }
        let newFD = open(newPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard newFD >= 0 else { throw LayerError(.input, layer: newPath, "cannot open directory: \(Errno(rawValue: errno).description)") }
        defer { close(newFD) }
        var oldFD: Int32 = -1
        if let oldPath {
            oldFD = open(oldPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard oldFD >= 0 else { throw LayerError(.input, layer: oldPath, "cannot open directory: \(Errno(rawValue: errno).description)") }
        }
        defer { if oldFD >= 0 { close(oldFD) } }

        // 1. Find the changes. Where every entry of NEW is a change (an upper dir, or a first layer
        // with an empty OLD), they are streamed to the writer during the walk instead (below), so
        // compression starts with the first entry; LAYERKIT_DIFF_STREAMING=0 turns that off.
        let changes = ChangeSet(newRootFD: newFD, xattrPolicy: options.xattrPolicy)
        var streaming = false
        do throws(LayerError) {
            if options.streamFullLayers {
                if oldFD < 0 {
                    streaming = true
                } else {
                    let oldNames = try FS.listDir(oldFD)
                    streaming = oldNames.isEmpty
                }
            }
            if streaming {
                if oldFD >= 0 { try ChangeWalker.compareRoots(oldFD: oldFD, changes: changes) }
            } else if oldFD >= 0 {
                try ChangeWalker.twoTrees(oldFD: oldFD, changes: changes, compareContents: options.compareContents)
            } else {
                try ChangeWalker.upper(changes: changes)
            }
        } catch {
            throw error.inLayer(newPath)
        }

        // 2. Write them: tar here, compression on the other thread(s).
        let pipe = ChunkPipe(chunkSize: 1 << 20, capacity: 8)
        // Uncompressed, the blob is the tar: its digest is the diffID, hashed once.
        let output = OutputStage(pipe: pipe, sink: BlobSink(fd: outputFD, hashing: options.compression != .none),
                                 compressor: try options.makeCompressor())
        output.start()
        var entries = 0
        var warnings = changes.warnings
        var diffID: Digest?
        var tarSize: Int64 = 0
        var failure: LayerError?
        do throws(LayerError) {
            let sink = TarSink(pipe: pipe)
            let emitter = Emitter(sink: sink, rootFD: newFD, rootPath: changes.newRootPath, options: options)
            if streaming {
                if let root = changes.rootItem {
                    try emitter.emit(root)
                    entries += 1
                }
                let emit: StreamingWalker.Emit = { (item) throws(LayerError) in
                    try emitter.emit(item)
                    entries += 1
                }
                if oldFD >= 0 {
                    try StreamingWalker.fullTree(rootFD: newFD, emit: emit) { warnings.append($0) }
                } else {
                    try StreamingWalker.upper(rootFD: newFD, rootPath: changes.newRootPath, emit: emit) { warnings.append($0) }
                }
            } else {
                for item in changes.ordered() {
                    try emitter.emit(item)
                    entries += 1
                }
            }
            warnings += emitter.warnings
            try sink.finish()
            tarSize = sink.total
            pipe.finish(nil)
        } catch {
            failure = error
            pipe.close()
            pipe.finish(error)
        }
        output.wait()
        if let e = output.error { throw e.inLayer(newPath) }
        if let failure { throw failure.inLayer(newPath) }
        // Every chunk has been taken (the output stage is done): the shared digest is complete.
        diffID = pipe.sharedDigest()
        let blobDigest = options.compression == .none ? diffID! : output.sink.hasher.finalize()
        let descriptor = Descriptor(mediaType: options.mediaType, digest: blobDigest, size: output.sink.size)
        return DiffResult(descriptor: descriptor, diffID: diffID!, tarSize: tarSize, entryCount: entries, warnings: warnings)
    }
}

extension DiffOptions {
    func makeCompressor() throws(LayerError) -> any BlobCompressor {
        switch compression {
        case .none: return StoreCompressor()
        case .gzip:
            let level = level ?? 6
            let isal = level <= 0 ? 0 : level == 1 ? 1 : level <= 6 ? 2 : 3
            return ParallelGzipCompressor(level: isal, workers: max(1, threads))
        case .zstd:
            let workers = Int32(ProcessInfo.processInfo.environment["LAYERKIT_ZSTD_WORKERS"].flatMap { Int($0) } ?? max(1, threads))
            return try ZstdCompressor(level: Int32(level ?? 3), workers: workers)
        }
    }
}

/// The compressing side of the diff pipeline, on its own thread.
final class OutputStage: @unchecked Sendable {
    let pipe: ChunkPipe
    let sink: BlobSink
    let compressor: any BlobCompressor
    private let finished = DispatchSemaphore(value: 0)
    private(set) var error: LayerError?

    init(pipe: ChunkPipe, sink: BlobSink, compressor: any BlobCompressor) {
        self.pipe = pipe
        self.sink = sink
        self.compressor = compressor
    }

    func start() {
        let t = Thread { [self] in
            do throws(LayerError) {
                while let chunk = try pipe.next() {
                    defer { pipe.recycle(chunk) }
                    try compressor.feed(UnsafeRawBufferPointer(start: chunk.base, count: chunk.count), into: sink)
                }
                try compressor.finish(into: sink)
            } catch {
                self.error = error
                pipe.close()
            }
            finished.signal()
        }
        t.name = "layerkit-compress"
        t.start()
    }

    func wait() { finished.wait() }
}

/// Writes DiffItems as tar entries.
final class Emitter {
    let sink: TarSink
    let rootFD: Int32
    let options: DiffOptions
    private var firstNameOfInode: [ChangeSet.InodeKey: [UInt8]] = [:]
    private(set) var warnings: [String] = []

    let rootPath: [UInt8]
    /// The dir of the last file written: entries come dir by dir, so one open per dir serves.
    private var cachedDir: (path: EntryPath, fd: Int32)?

    deinit { if let cachedDir { close(cachedDir.fd) } }

    private func parentDir(of path: EntryPath) throws(LayerError) -> Int32 {
        let parent = path.parent
        if parent.isRoot { return rootFD }
        if let cachedDir, cachedDir.path == parent { return cachedDir.fd }
        let fd = parent.withCString {
            lk_openat2(rootFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, UInt64(LK_RESOLVE_BENEATH | LK_RESOLVE_NO_SYMLINKS))
        }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open its directory") }
        if let cachedDir { close(cachedDir.fd) }
        cachedDir = (parent, fd)
        return fd
    }

    init(sink: TarSink, rootFD: Int32, rootPath: [UInt8], options: DiffOptions) {
        self.sink = sink
        self.rootFD = rootFD
        self.rootPath = rootPath
        self.options = options
    }

    func emit(_ item: DiffItem) throws(LayerError) {
        switch item.kind {
        case .whiteout:
            let name = item.path.parent.appending(ApplyEngine.whiteoutPrefix + Array(item.path.name))
            try sink.write(TarFormatter.headerBytes(marker(name)))
        case .opaque:
            try sink.write(TarFormatter.headerBytes(marker(item.path.appending(ApplyEngine.opaqueMarker))))
        case .node:
            try emitNode(item)
        }
    }

    private func marker(_ path: EntryPath) -> TarHeader {
        TarHeader(kind: .file, path: path.bytes, mode: 0o644, mtime: options.sourceDateEpoch ?? 0)
    }

    private func emitNode(_ item: DiffItem) throws(LayerError) {
        let st = item.st
        var h = TarHeader(kind: .file, path: item.path.bytes)
        h.mode = UInt32(st.st_mode & 0o7777)
        h.uid = st.st_uid
        h.gid = st.st_gid
        h.mtime = Int64(st.st_mtim.tv_sec)
        h.mtimeNsec = Int(st.st_mtim.tv_nsec)
        if let epoch = options.sourceDateEpoch, h.mtime >= epoch {
            h.mtime = epoch
            h.mtimeNsec = 0
        }
        let type = FS.fileType(st)
        if item.path.isRoot {
            h.xattrs = item.xattrs
        } else if type != mode_t(LK_S_IFREG) {
            h.xattrs = ChangeSet.xattrs(ChangeSet.absolute(rootPath, item.path), policy: options.xattrPolicy)
        }
        switch type {
        case mode_t(LK_S_IFDIR): h.kind = .dir
        case mode_t(LK_S_IFLNK): h.kind = .symlink; h.linkTarget = item.linkTarget
        case mode_t(LK_S_IFCHR), mode_t(LK_S_IFBLK):
            h.kind = type == mode_t(LK_S_IFCHR) ? .char : .block
            h.devMajor = lk_major(UInt64(st.st_rdev))
            h.devMinor = lk_minor(UInt64(st.st_rdev))
        case mode_t(LK_S_IFIFO): h.kind = .fifo
        case mode_t(LK_S_IFREG):
            if st.st_nlink > 1 {
                let key = ChangeSet.InodeKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
                if let first = firstNameOfInode[key] {
                    h.kind = .hardlink
                    h.linkTarget = first
                    h.xattrs = []
                    try sink.write(TarFormatter.headerBytes(h))
                    return
                }
                firstNameOfInode[key] = item.path.bytes
            }
            try emitFile(h, st: st, path: item.path)
            return
        default:
            warnings.append("entry \"\(item.path)\": unsupported file type skipped")
            return
        }
        try sink.write(TarFormatter.headerBytes(h))
    }

    private func emitFile(_ header: TarHeader, st: stat, path: EntryPath) throws(LayerError) {
        var h = header
        let dirFD = try parentDir(of: path)
        let fd = withCString(path.name) { openat(dirFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open") }
        defer { close(fd) }
        h.xattrs = ChangeSet.allXattrs(fd: fd).filter { options.xattrPolicy.appliesXattr($0.0) }
        let size = Int64(st.st_size)
        // Holes: a file with fewer blocks than its size is mapped with SEEK_DATA/SEEK_HOLE.
        if size > 0 && Int64(st.st_blocks) * 512 < size {
            let map = dataRegions(fd, size: size)
            let dataBytes = map.reduce(Int64(0)) { $0 + $1.1 }
            if dataBytes < size {
                let mapBlock = TarFormatter.sparseMap(map)
                h.sparse = (map, size)
                h.size = Int64(mapBlock.count) + dataBytes
                try sink.write(TarFormatter.headerBytes(h))
                try sink.write(mapBlock)
                for (offset, length) in map {
                    if try !sink.copy(from: fd, offset: offset, length: length, name: path.description) {
                        warnings.append("entry \"\(path)\": file shrank while being read; padded with zeros")
                    }
                }
                try sink.pad(dataBytes)
                return
            }
        }
        h.size = size
        try sink.write(TarFormatter.headerBytes(h))
        if size > 0 {
            if try !sink.copy(from: fd, offset: 0, length: size, name: path.description) {
                warnings.append("entry \"\(path)\": file shrank while being read; padded with zeros")
            }
            try sink.pad(size)
        }
    }

    private func dataRegions(_ fd: Int32, size: Int64) -> [(Int64, Int64)] {
        var regions: [(Int64, Int64)] = []
        var offset: Int64 = 0
        while offset < size {
            let data = lseek(fd, off_t(offset), 3 /* SEEK_DATA */)
            if data < 0 { break }
            var hole = lseek(fd, data, 4 /* SEEK_HOLE */)
            if hole < 0 { hole = off_t(size) }
            regions.append((Int64(data), Int64(hole) - Int64(data)))
            offset = Int64(hole)
        }
        // GNU sparse 1.0 expects the real size reached: a final empty region marks it.
        if regions.last.map({ $0.0 + $0.1 }) != size { regions.append((size, 0)) }
        return regions
    }
}
