import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes DiffItems as tar entries.
final class EntryEmitter {
    let sink: TarSink
    let rootFD: Int32
    let options: DiffOptions
    private var firstNameOfInode: [InodeKey: [UInt8]] = [:]
    private(set) var warnings: [String] = []

    let rootPath: [UInt8]
    /// The dir of the last file written: entries come dir by dir, so one open per dir serves.
    private var cachedDir: (path: EntryPath, fd: Int32)?

    deinit { if let cachedDir { close(cachedDir.fd) } }

    /// The item's parent dir: the walker's open fd when it gave one, else opened by path below the root.
    private func parentDir(of item: DiffItem) throws(LayerError) -> Int32 {
        if item.parentFD >= 0 { return item.parentFD }
        let path = item.path
        let parent = path.parent
        if parent.isRoot { return rootFD }
        if let cachedDir, cachedDir.path == parent { return cachedDir.fd }
        let fd = FileSystem.openBeneath(rootFD, parent.bytes)
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open its directory") }
        if let cachedDir { close(cachedDir.fd) }
        cachedDir = (parent, fd)
        return fd
    }

    let cancellation: CancellationFlag?

    init(sink: TarSink, rootFD: Int32, rootPath: [UInt8], options: DiffOptions, cancellation: CancellationFlag? = nil) {
        self.cancellation = cancellation
        self.sink = sink
        self.rootFD = rootFD
        self.rootPath = rootPath
        self.options = options
    }

    func emit(_ item: DiffItem) throws(LayerError) {
        try cancellation?.check()
        switch item.kind {
        case .whiteout:
            let name = item.path.parent.appending(LayerFormat.whiteoutName(for: item.path.name))
            try sink.write(TarFormatter.headerBytes(marker(name)))
        case .opaque:
            try sink.write(TarFormatter.headerBytes(marker(item.path.appending(LayerFormat.opaqueMarker))))
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
        let type = FileSystem.fileType(st)
        if item.path.isRoot {
            h.xattrs = item.xattrs
        } else if type != mode_t(LK_S_IFREG) {
            let parentFD = try parentDir(of: item)
            h.xattrs = Xattrs.all(parentFD, Array(item.path.name), absolute: ChangeSet.absolute(rootPath, item.path))
                .filter { options.xattrPolicy.carries($0.name) }
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
                let key = InodeKey(st)
                if let first = firstNameOfInode[key] {
                    h.kind = .hardlink
                    h.linkTarget = first
                    h.xattrs = []
                    try sink.write(TarFormatter.headerBytes(h))
                    return
                }
                firstNameOfInode[key] = item.path.bytes
            }
            try emitFile(h, st: st, item: item)
            return
        default:
            warnings.append("entry \"\(item.path)\": unsupported file type skipped")
            return
        }
        try sink.write(TarFormatter.headerBytes(h))
    }

    private func emitFile(_ header: TarHeader, st: stat, item: DiffItem) throws(LayerError) {
        var h = header
        let path = item.path
        let dirFD = try parentDir(of: item)
        let fd = withCString(path.name) { openat(dirFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot open") }
        defer { close(fd) }
        h.xattrs = Xattrs.all(fd: fd).filter { options.xattrPolicy.carries($0.name) }
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
