import CArchive

/// Reads a tar stream's structure the way Go's `archive/tar` does (the reader of containerd,
/// Docker and umoci), on the bytes libarchive is about to parse, and refuses what Go refuses,
/// so a layer cannot mean one tree to LayerKit and another to them.
///
/// It sees every byte of the tar stream once, before libarchive does (`TarReader` feeds it from
/// its read callback, no copy), parses only the 512-byte headers and the PAX / GNU extension
/// data, and skips file data by count. For every entry it records Go's reading (`TarEntryView`),
/// which `TarReader` compares with libarchive's.
///
/// ## Rules (Go's `ErrHeader`, `ErrFieldTooLong`, `io.ErrUnexpectedEOF` and sparse errors)
///
/// A layer is refused with `LayerError(.corruptArchive, entry:, "tar: ...")` when:
/// 1. **Checksum**: a header's checksum field is not octal, or matches neither the unsigned nor
///    the signed sum of the block (the field counted as spaces).
/// 2. **Numeric fields** (mode, uid, gid, size, mtime; device major/minor in every ustar, GNU or
///    star header; star's atime/ctime; the GNU sparse fields of an `S` entry) are octal —
///    leading and trailing spaces and NULs allowed, then digits up to the first NUL, nothing
///    else — or base-256 (high bit of the first byte) fitting an Int64.
/// 3. **Sizes**: no negative size, for an entry or an extension header (header-only types —
///    links, devices, dirs, FIFOs — carry no data whatever their size says).
/// 4. **PAX records** (`x`, and `g` global headers too) are `LENGTH key=value\n` with a decimal
///    length that counts the whole record and lands exactly on its newline, at least 5 bytes,
///    within the header; the key is not empty and runs to the first `=`; no NUL in a key, nor in
///    the value of `path`, `linkpath`, `uname`, `gname`. Nothing else may follow the records
///    (not even NUL padding).
/// 5. **PAX values** Go interprets must parse: `size`, `uid`, `gid` as decimal Int64 (`+`/`-`
///    allowed), `mtime`, `atime`, `ctime` as `SECONDS[.DIGITS]`. Empty values are ignored.
/// 6. **GNU sparse files**: version 0.0 records alternate `GNU.sparse.offset`/`numbytes` without
///    commas; 0.0/0.1 need a decimal `GNU.sparse.numblocks` and a `GNU.sparse.map` of exactly
///    twice as many decimal numbers; a 1.0 map (at the start of the data, decimal lines) must
///    fit in the entry's data; an old GNU `S` entry must be in a GNU-format header. The
///    fragments are in order, non-negative, non-overlapping and within the file's size; no
///    sparse map on a header-only type; the data stored is exactly what the map references
///    (Go's "sparse file references non-existent data" / "contains unreferenced data").
/// 7. **Extension data** (PAX headers, GNU `L` long names and `K` long link names) is at most
///    1 MiB (`ErrFieldTooLong`); `L`/`K` names are read up to their first NUL.
/// 8. **End of archive**: a zero block must be followed by another zero block or by the end of
///    the stream; a header, extension data, a sparse map or file data cut short is "unexpected
///    EOF". A stream ending at a header boundary, after one zero block, or inside the padding of
///    its last entry's data is complete, as for Go (the missing padding is given to libarchive
///    as zeros; it is not part of the blob and not hashed). Bytes after the end are not read
///    here; they still reach the diffID hash.
///
/// ## Where Go and libarchive read one header two ways: refused too
/// Go accepts these, but libarchive reads them differently, so LayerKit cannot extract what
/// containerd would; each is refused as "tar: ambiguous entry: ...":
/// - any field of an entry read differently (`TarEntryView.disagreement`: header position,
///   path, type, link target, size, mode, owner, mtime, PAX atime, device, xattrs, sparse map) — e.g. an
///   empty or `+`-signed PAX number, `GNU.sparse.name` without a map, a type-`0` file named
///   `dir/`, `LIBARCHIVE.xattr.*` records, a GNU header whose unreadable atime makes Go use the
///   prefix field, a PAX `linkpath` on a symlink whose ustar link field is empty, a PAX header
///   followed by a global one;
/// - GNU sparse fields in a GNU header of another type than `S`, PAX `GNU.sparse.*` records on
///   an entry Go does not read as a PAX sparse file, and `SUN.holesdata` (libarchive would place
///   the data differently, which no header field shows);
/// - the type flags libarchive reads as extensions but Go as plain entries: `A` (Solaris ACL),
///   `V` (GNU volume label), `X` (Sun's PAX header);
/// - more than 31 extension headers before one entry (libarchive stops reading them);
/// - an extension header (`x`, `L`, `K`) with no entry after it (Go drops it, libarchive fails);
/// - a negative size on a header-only entry, a GNU sparse 1.0 map line over 100 bytes (libarchive
///   refuses them).
///
/// `TarGoDifferentialTests` runs Go's reader itself over a corpus of such archives and random
/// mutations of well-formed ones, and checks that LayerKit gives the same answer.
struct TarValidator {
    private enum State {
        /// The next block is a header.
        case header
        /// A zero block was read: the next must be another, or the stream must end.
        case secondZeroBlock(firstAt: Int64)
        /// File data to skip.
        case data(remaining: Int64, padding: Int64)
        /// Padding after data or extension data, up to the next block.
        case padding(remaining: Int64)
        /// PAX or GNU long name/link data being collected.
        case extensionData(remaining: Int64, padding: Int64)
        /// An old GNU sparse extension block (21 more fragments).
        case gnuSparseExtension
        /// The GNU sparse 1.0 map at the start of the data.
        case sparseMap
        /// After the end-of-archive marker: nothing more is read.
        case ended
    }

    /// The extension headers read for the entry to come.
    private struct Pending {
        /// Where libarchive's reading of the next entry starts (PAX global headers included).
        var groupStart: Int64?
        var paxRecords: [[UInt8]: [UInt8]]?
        var longName: [UInt8] = []
        var longLink: [UInt8] = []
        /// Extension headers of any kind (libarchive reads at most 32 headers for one entry).
        var headerCount = 0
        /// An `x`, `L` or `K` header is waiting for its entry.
        var awaitsEntry = false
    }

    /// An entry whose sparse map is still being read.
    private struct SparseEntry {
        var view: TarEntryView
        var physicalSize: Int64
        var fragments = SparseDataMap()
        var dataSize: Int64 = 0
        var previousEnd: Int64 = 0
        /// GNU 1.0 map: the bytes of the data it has used, the lines it needs and has read.
        var mapBytes: Int64 = 0
        var linesNeeded: Int64 = 1
        var linesRead: Int64 = 0
        var line: [UInt8] = []
        var pendingOffset: Int64 = 0
    }

    private var state = State.header
    /// Bytes of the stream read so far.
    private(set) var offset: Int64 = 0
    /// Where Go stops reading (the first zero block, or the end of the stream); nil until then.
    private(set) var endOffset: Int64?
    private var block = [UInt8](repeating: 0, count: TarSyntax.blockSize)
    private var blockFill = 0
    private var pending = Pending()
    private var extensionHeader: (type: UInt8, name: [UInt8], data: [UInt8])?
    private var sparseEntry: SparseEntry?
    private var views: [TarEntryView] = []
    private var viewsHead = 0

    // MARK: - Feeding

    /// Reads the next bytes of the stream. Throws when Go's reader would fail on them.
    mutating func consume(_ bytes: UnsafeRawBufferPointer) throws(LayerError) {
        var p = 0
        let count = bytes.count
        while p < count {
            let available = count - p
            switch state {
            case .ended:
                offset += Int64(available)
                return
            case .data(let remaining, let padding):
                let n = Int(min(Int64(available), remaining))
                p += n
                offset += Int64(n)
                if Int64(n) == remaining { state = padding > 0 ? .padding(remaining: padding) : .header }
                else { state = .data(remaining: remaining - Int64(n), padding: padding) }
            case .padding(let remaining):
                let n = Int(min(Int64(available), remaining))
                p += n
                offset += Int64(n)
                state = Int64(n) == remaining ? .header : .padding(remaining: remaining - Int64(n))
            case .extensionData(let remaining, let padding):
                let n = Int(min(Int64(available), remaining))
                extensionHeader!.data.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[p..<(p + n)]))
                p += n
                offset += Int64(n)
                if Int64(n) == remaining {
                    state = padding > 0 ? .padding(remaining: padding) : .header
                    try finishExtension()
                } else {
                    state = .extensionData(remaining: remaining - Int64(n), padding: padding)
                }
            case .header, .secondZeroBlock, .gnuSparseExtension, .sparseMap:
                if blockFill == 0 && available >= TarSyntax.blockSize {
                    let start = offset
                    offset += Int64(TarSyntax.blockSize)
                    try handleBlock(UnsafeRawBufferPointer(rebasing: bytes[p..<(p + TarSyntax.blockSize)]), at: start)
                    p += TarSyntax.blockSize
                } else {
                    let n = min(available, TarSyntax.blockSize - blockFill)
                    block.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: blockFill).copyMemory(from: bytes.baseAddress! + p, byteCount: n) }
                    blockFill += n
                    p += n
                    offset += Int64(n)
                    if blockFill == TarSyntax.blockSize {
                        blockFill = 0
                        let saved = block
                        let start = offset - Int64(TarSyntax.blockSize)
                        var failure: LayerError?
                        saved.withUnsafeBytes { b in
                            do throws(LayerError) { try handleBlock(b, at: start) } catch { failure = error }
                        }
                        if let failure { throw failure }
                    }
                }
            }
        }
    }

    /// The stream has ended. Returns how many zero bytes of padding the last entry's data lacks
    /// (Go reads such a stream as complete; libarchive wants them). Throws when Go's reader
    /// would fail at this end.
    mutating func finish() throws(LayerError) -> Int {
        switch state {
        case .ended:
            return 0
        case .header where blockFill == 0:
            try endArchive(at: offset)
            return 0
        case .secondZeroBlock(let first) where blockFill == 0:
            try endArchive(at: first)
            return 0
        case .padding(let remaining):
            try endArchive(at: offset + remaining)
            return Int(remaining)
        case .header, .secondZeroBlock:
            throw failure("unexpected EOF", "the archive ends inside a header block")
        case .data:
            throw failure("unexpected EOF", "the archive ends inside a file's data")
        case .extensionData:
            throw failure("unexpected EOF", "the archive ends inside an extension header's data")
        case .gnuSparseExtension, .sparseMap:
            throw failure("unexpected EOF", "the archive ends inside a sparse file's map")
        }
    }

    // MARK: - Agreement with libarchive

    /// Compares the entry libarchive just read (its headers starting at `position`) with Go's
    /// reading of the same entry.
    mutating func check(_ entry: OpaquePointer, at position: Int64) throws(LayerError) {
        guard viewsHead < views.count else {
            throw LayerError(.corruptArchive, entry: archive_entry_pathname(entry).map { String(cString: $0) },
                             "tar: ambiguous entry: libarchive reads an entry at byte \(position) where Go's archive/tar reads none")
        }
        let view = views[viewsHead]
        viewsHead += 1
        if viewsHead > 256 && viewsHead * 2 > views.count {
            views.removeFirst(viewsHead)
            viewsHead = 0
        }
        if let difference = view.disagreement(with: entry, position: position) {
            throw LayerError(.corruptArchive, entry: view.displayName, "tar: ambiguous entry: \(difference)")
        }
    }

    /// libarchive found the end of the archive at `position`: Go must have too, at the same place,
    /// with no entry left.
    func checkEnd(at position: Int64) throws(LayerError) {
        if viewsHead < views.count {
            let view = views[viewsHead]
            throw LayerError(.corruptArchive, entry: view.displayName,
                             "tar: ambiguous entry: Go's archive/tar reads an entry at byte \(view.headerOffset) where libarchive finds the end of the archive")
        }
        guard let endOffset, endOffset == position else {
            throw LayerError(.corruptArchive, "tar: ambiguous archive: libarchive finds its end at byte \(position), Go's archive/tar at \(endOffset.map(String.init) ?? "none")")
        }
    }

    // MARK: - Blocks

    private mutating func handleBlock(_ b: UnsafeRawBufferPointer, at start: Int64) throws(LayerError) {
        switch state {
        case .header:
            if TarSyntax.isZeroBlock(b) {
                if pending.awaitsEntry { throw danglingExtension() }
                state = .secondZeroBlock(firstAt: start)
            } else {
                try handleHeader(b, at: start)
            }
        case .secondZeroBlock(let first):
            guard TarSyntax.isZeroBlock(b) else {
                throw failure("invalid tar header", "a zero block (the end-of-archive marker) is followed by data, at byte \(start)")
            }
            try endArchive(at: first)
        case .gnuSparseExtension:
            try readGNUSparseExtension(b)
        case .sparseMap:
            try readSparseMapBlock(b)
        default:
            fatalError("handleBlock in a data state")
        }
    }

    private mutating func endArchive(at position: Int64) throws(LayerError) {
        if pending.awaitsEntry { throw danglingExtension() }
        // A PAX global header before the end is part of libarchive's last (empty) read.
        endOffset = pending.groupStart ?? position
        state = .ended
    }

    private func danglingExtension() -> LayerError {
        LayerError(.corruptArchive, entry: entryName(nil),
                   "tar: ambiguous entry: an extension header with no entry after it (Go's archive/tar ignores it, libarchive refuses it)")
    }

    /// A header block (not a zero block).
    private mutating func handleHeader(_ b: UnsafeRawBufferPointer, at start: Int64) throws(LayerError) {
        if pending.groupStart == nil { pending.groupStart = start }
        let rawName = TarSyntax.string(TarSyntax.field(b, TarSyntax.Field.name))
        func invalid(_ detail: String) -> LayerError {
            LayerError(.corruptArchive, entry: rawName.isEmpty ? nil : TarSyntax.displayName(rawName), "tar: invalid tar header: \(detail)")
        }
        // A block whose checksum is wrong is no header: its name field names nothing.
        guard let checksumOK = TarSyntax.checksumMatches(b) else {
            throw failure("invalid tar header", "the checksum field is not an octal number (at byte \(start): not a tar header)")
        }
        guard checksumOK else { throw failure("invalid tar header", "checksum mismatch (at byte \(start): a damaged header, or not a tar header)") }

        let format = TarSyntax.Format(b)
        var badField: String?
        func number(_ field: Range<Int>, _ what: String) -> Int64 {
            guard let value = TarSyntax.number(TarSyntax.field(b, field)) else {
                if badField == nil { badField = what }
                return 0
            }
            return value
        }
        var typeflag = b[TarSyntax.Field.typeflag]
        var name = rawName
        var linkname = TarSyntax.string(TarSyntax.field(b, TarSyntax.Field.linkname))
        var size = number(TarSyntax.Field.size, "size")
        let mode = number(TarSyntax.Field.mode, "mode")
        var uid = number(TarSyntax.Field.uid, "uid")
        var gid = number(TarSyntax.Field.gid, "gid")
        var mtime = TarSyntax.Timestamp(seconds: number(TarSyntax.Field.mtime, "mtime"), nanoseconds: 0)
        var atime: TarSyntax.Timestamp?
        var devMajor: Int64 = 0
        var devMinor: Int64 = 0
        var prefix: [UInt8] = []
        if format != .v7 {
            devMajor = number(TarSyntax.Field.devMajor, "devmajor")
            devMinor = number(TarSyntax.Field.devMinor, "devminor")
            switch format {
            case .ustar:
                prefix = TarSyntax.string(TarSyntax.field(b, TarSyntax.Field.ustarPrefix))
            case .star:
                prefix = TarSyntax.string(TarSyntax.field(b, TarSyntax.Field.starPrefix))
                _ = number(TarSyntax.Field.starAccessTime, "atime")
                _ = number(TarSyntax.Field.starChangeTime, "ctime")
            case .gnu:
                // Go's fallback for archives of Go before 1.8: when the GNU atime or ctime is not
                // a number, the bytes there are read as a ustar prefix. libarchive never does that.
                let atimeBad = b[TarSyntax.Field.gnuAccessTime.lowerBound] != 0 && TarSyntax.number(TarSyntax.field(b, TarSyntax.Field.gnuAccessTime)) == nil
                let ctimeBad = b[TarSyntax.Field.gnuChangeTime.lowerBound] != 0 && TarSyntax.number(TarSyntax.field(b, TarSyntax.Field.gnuChangeTime)) == nil
                if atimeBad || ctimeBad {
                    let candidate = TarSyntax.string(TarSyntax.field(b, TarSyntax.Field.ustarPrefix))
                    if candidate.allSatisfy({ $0 < 0x80 }) { prefix = candidate }
                }
            case .v7:
                break
            }
        }
        if !prefix.isEmpty { name = prefix + [UInt8(ascii: "/")] + name }
        if let badField { throw invalid("the \(badField) field is not a valid number") }

        let headerOnly = TarEntryView.isHeaderOnly(typeflag)
        if size < 0 {
            if !headerOnly { throw invalid("negative size \(size)") }
            throw LayerError(.corruptArchive, entry: entryName(name),
                             "tar: ambiguous entry: negative size \(size) (Go's archive/tar ignores it for this type, libarchive refuses it)")
        }

        switch typeflag {
        case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
            pending.headerCount += 1
            if pending.headerCount > 31 {
                throw LayerError(.corruptArchive, entry: entryName(name),
                                 "tar: ambiguous entry: more than 31 extension headers in a row (libarchive stops reading them)")
            }
            if size > TarSyntax.maximumSpecialFileSize {
                throw LayerError(.corruptArchive, entry: entryName(name),
                                 "tar: header field too long: extension header of \(size) bytes (the limit is 1 MiB)")
            }
            extensionHeader = (typeflag, name, [])
            extensionHeader!.data.reserveCapacity(Int(size))
            let padding = Self.padding(size)
            if size > 0 {
                state = .extensionData(remaining: size, padding: padding)
            } else {
                state = padding > 0 ? .padding(remaining: padding) : .header
                try finishExtension()
            }
            return
        case UInt8(ascii: "A"), UInt8(ascii: "V"), UInt8(ascii: "X"):
            throw LayerError(.corruptArchive, entry: entryName(name),
                             "tar: ambiguous entry: type \(TarSyntax.quoted([typeflag])) is an extension header to libarchive, a file to Go's archive/tar")
        default:
            break
        }

        // An entry: apply its extension headers as Go does (PAX records, then GNU long names).
        let records = pending.paxRecords ?? [:]
        var xattrs: [[UInt8]: [UInt8]] = [:]
        var hasSparseRecords = false
        for (key, value) in records {
            if key.starts(with: Self.xattrPrefix) { xattrs[Array(key.dropFirst(Self.xattrPrefix.count))] = value }
            if key.starts(with: Self.gnuSparsePrefix) { hasSparseRecords = true }
            if key == Self.sunHolesKey {
                throw LayerError(.corruptArchive, entry: TarSyntax.displayName(name),
                                 "tar: ambiguous entry: a SUN.holesdata record (libarchive reads the data as sparse, Go's archive/tar does not)")
            }
            if value.isEmpty { continue }  // Go keeps the header's value
            func decimal() throws(LayerError) -> Int64 {
                guard let n = TarSyntax.decimal(value) else {
                    throw LayerError(.corruptArchive, entry: entryName(name),
                                     "tar: invalid tar header: PAX record \(TarSyntax.quoted(key))=\(TarSyntax.quoted(value)) is not a decimal number")
                }
                return n
            }
            func time() throws(LayerError) -> TarSyntax.Timestamp {
                guard let t = TarSyntax.paxTime(value) else {
                    throw LayerError(.corruptArchive, entry: entryName(name),
                                     "tar: invalid tar header: PAX record \(TarSyntax.quoted(key))=\(TarSyntax.quoted(value)) is not a time")
                }
                return t
            }
            switch key {
            case Self.pathKey: name = value
            case Self.linkpathKey: linkname = value
            case Self.uidKey: uid = try decimal()
            case Self.gidKey: gid = try decimal()
            case Self.sizeKey: size = try decimal()
            case Self.mtimeKey: mtime = try time()
            case Self.atimeKey: atime = try time()
            case Self.ctimeKey: _ = try time()
            default: break
            }
        }
        if !pending.longName.isEmpty { name = pending.longName }
        if !pending.longLink.isEmpty { linkname = pending.longLink }
        if typeflag == 0 { typeflag = name.last == UInt8(ascii: "/") ? UInt8(ascii: "5") : UInt8(ascii: "0") }
        if size < 0 {
            throw LayerError(.corruptArchive, entry: TarSyntax.displayName(name), headerOnly
                             ? "tar: ambiguous entry: negative PAX size \(size) (Go's archive/tar ignores it for this type, libarchive refuses it)"
                             : "tar: invalid tar header: negative size \(size)")
        }
        let physicalSize = headerOnly ? 0 : size
        var view = TarEntryView(headerOffset: pending.groupStart!, typeflag: typeflag, name: name, linkname: linkname,
                                size: size, mode: mode, uid: uid, gid: gid, modificationTime: mtime,
                                accessTime: atime, devMajor: devMajor, devMinor: devMinor, xattrs: xattrs)
        func ambiguous(_ detail: String) -> LayerError {
            LayerError(.corruptArchive, entry: view.displayName, "tar: ambiguous entry: \(detail)")
        }

        if typeflag == UInt8(ascii: "S") {
            guard format == .gnu else {
                throw LayerError(.corruptArchive, entry: view.displayName, "tar: invalid tar header: a GNU sparse entry (type 'S') in a header that is not in GNU format")
            }
            if hasSparseRecords { throw ambiguous("PAX GNU.sparse records on an old GNU sparse entry (type 'S')") }
            guard let realSize = TarSyntax.number(TarSyntax.field(b, TarSyntax.Field.gnuRealSize)) else {
                throw LayerError(.corruptArchive, entry: view.displayName, "tar: invalid tar header: the GNU sparse real size is not a valid number")
            }
            view.size = realSize
            sparseEntry = SparseEntry(view: view, physicalSize: physicalSize)
            let more = try readGNUSparseFragments(b, from: TarSyntax.Field.gnuSparse, slots: 4, continuation: TarSyntax.Field.gnuIsExtended)
            state = .gnuSparseExtension
            if !more { try finishSparseEntry() }
            return
        }
        if format == .gnu && (b[TarSyntax.Field.gnuSparse] != 0 || b[TarSyntax.Field.gnuIsExtended] != 0 || b[TarSyntax.Field.gnuRealSize.lowerBound] != 0) {
            throw ambiguous("GNU sparse fields in a header of type \(TarSyntax.quoted([typeflag])) (libarchive reads them, Go's archive/tar does not)")
        }

        guard hasSparseRecords else {
            enqueue(view)
            beginData(physicalSize)
            return
        }
        // PAX sparse formats (GNU 0.0, 0.1 and 1.0), detected as Go detects them.
        let major = records[Self.sparseMajorKey] ?? []
        let minor = records[Self.sparseMinorKey] ?? []
        let version: SparseVersion?
        if major == Self.digit0 && (minor == Self.digit0 || minor == Self.digit1) { version = .mapRecord }
        else if major == Self.digit1 && minor == Self.digit0 { version = .mapInData }
        else if !major.isEmpty || !minor.isEmpty { version = nil }
        else if !(records[TarSyntax.gnuSparseMapKey] ?? []).isEmpty { version = .mapRecord }
        else { version = nil }
        guard let version else {
            throw ambiguous("GNU.sparse records Go's archive/tar does not read as a sparse file (libarchive does)")
        }
        if let sparseName = records[Self.sparseNameKey], !sparseName.isEmpty { view.name = sparseName }
        let sizeText = (records[Self.sparseSizeKey] ?? []).isEmpty ? (records[Self.sparseRealSizeKey] ?? []) : records[Self.sparseSizeKey]!
        if !sizeText.isEmpty {
            guard let logical = TarSyntax.decimal(sizeText) else {
                throw LayerError(.corruptArchive, entry: view.displayName, "tar: invalid tar header: the GNU sparse size \(TarSyntax.quoted(sizeText)) is not a decimal number")
            }
            view.size = logical
        }
        sparseEntry = SparseEntry(view: view, physicalSize: physicalSize)
        switch version {
        case .mapRecord:
            try readGNUSparseMapRecord(records)
            try finishSparseEntry()
        case .mapInData:
            state = .sparseMap
            if physicalSize < Int64(TarSyntax.blockSize) {
                throw failure("unexpected EOF", "the GNU sparse map runs past the entry's data", entry: view.displayName)
            }
        }
    }

    private enum SparseVersion { case mapRecord, mapInData }

    /// PAX, GNU long name or long link data is complete.
    private mutating func finishExtension() throws(LayerError) {
        guard let (type, name, data) = extensionHeader else { return }
        extensionHeader = nil
        switch type {
        case UInt8(ascii: "x"), UInt8(ascii: "g"):
            let records: [[UInt8]: [UInt8]]
            do throws(TarSyntaxError) { records = try TarSyntax.paxRecords(data) } catch {
                throw LayerError(.corruptArchive, entry: entryName(name), "tar: invalid tar header: \(error.detail)")
            }
            if type == UInt8(ascii: "x") {
                pending.paxRecords = records
                pending.awaitsEntry = true
            } else {
                // Go returns a global header as an entry of its own, which ends what came before
                // it; libarchive folds it into the next entry (its start stays the group's start).
                pending.paxRecords = nil
                pending.longName = []
                pending.longLink = []
            }
        case UInt8(ascii: "L"):
            pending.longName = Array(data.prefix { $0 != 0 })
            pending.awaitsEntry = true
        default:
            pending.longLink = Array(data.prefix { $0 != 0 })
            pending.awaitsEntry = true
        }
    }

    // MARK: - Sparse maps

    /// Reads the fragments of an old GNU sparse header or extension block; returns whether an
    /// extension block follows.
    private mutating func readGNUSparseFragments(_ b: UnsafeRawBufferPointer, from start: Int, slots: Int, continuation: Int) throws(LayerError) -> Bool {
        for slot in 0..<slots {
            let at = start + slot * 24
            if b[at] == 0 { break }
            guard let offset = TarSyntax.number(TarSyntax.field(b, at..<(at + 12))), let length = TarSyntax.number(TarSyntax.field(b, (at + 12)..<(at + 24))) else {
                throw LayerError(.corruptArchive, entry: sparseEntry!.view.displayName, "tar: invalid tar header: a GNU sparse fragment is not a valid number")
            }
            try addFragment(offset: offset, length: length)
        }
        return b[continuation] != 0
    }

    private mutating func readGNUSparseExtension(_ b: UnsafeRawBufferPointer) throws(LayerError) {
        if !(try readGNUSparseFragments(b, from: 0, slots: 21, continuation: TarSyntax.Field.extensionIsExtended)) {
            try finishSparseEntry()
        }
    }

    /// GNU sparse 0.0/0.1: `GNU.sparse.numblocks` and `GNU.sparse.map` (`offset,length,...`).
    private mutating func readGNUSparseMapRecord(_ records: [[UInt8]: [UInt8]]) throws(LayerError) {
        let name = sparseEntry!.view.displayName
        guard let count = TarSyntax.decimal(records[Self.sparseNumBlocksKey] ?? []), count >= 0, count <= Int64.max / 2 else {
            throw LayerError(.corruptArchive, entry: name, "tar: invalid tar header: GNU.sparse.numblocks is missing or not a valid count")
        }
        let map = records[TarSyntax.gnuSparseMapKey] ?? []
        let numbers = map.isEmpty ? [] : map.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
        guard Int64(numbers.count) == 2 * count else {
            throw LayerError(.corruptArchive, entry: name, "tar: invalid tar header: GNU.sparse.map has \(numbers.count) numbers for \(count) fragments")
        }
        var i = 0
        while i < numbers.count {
            guard let offset = TarSyntax.decimal(numbers[i]), let length = TarSyntax.decimal(numbers[i + 1]) else {
                throw LayerError(.corruptArchive, entry: name, "tar: invalid tar header: GNU.sparse.map holds something else than decimal numbers")
            }
            try addFragment(offset: offset, length: length)
            i += 2
        }
    }

    /// GNU sparse 1.0: decimal lines at the start of the data (the count, then offset and
    /// length of each fragment), read a block at a time as Go does.
    private mutating func readSparseMapBlock(_ b: UnsafeRawBufferPointer) throws(LayerError) {
        sparseEntry!.mapBytes += Int64(TarSyntax.blockSize)
        for c in b {
            guard sparseEntry!.linesRead < sparseEntry!.linesNeeded else { break }
            if c != UInt8(ascii: "\n") {
                // libarchive reads at most 100 bytes a line, newline included.
                if sparseEntry!.line.count >= 99 {
                    throw LayerError(.corruptArchive, entry: sparseEntry!.view.displayName,
                                     "tar: ambiguous entry: a GNU sparse map line longer than 100 bytes (libarchive's limit)")
                }
                sparseEntry!.line.append(c)
                continue
            }
            let line = sparseEntry!.line
            sparseEntry!.line.removeAll(keepingCapacity: true)
            let index = sparseEntry!.linesRead
            sparseEntry!.linesRead += 1
            guard let value = TarSyntax.decimal(line) else {
                throw LayerError(.corruptArchive, entry: sparseEntry!.view.displayName,
                                 "tar: invalid tar header: GNU sparse map line \(TarSyntax.quoted(line)) is not a decimal number")
            }
            if index == 0 {
                guard value >= 0, value <= (Int64.max - 1) / 2 else {
                    throw LayerError(.corruptArchive, entry: sparseEntry!.view.displayName, "tar: invalid tar header: GNU sparse map count \(value) is not valid")
                }
                sparseEntry!.linesNeeded = 1 + 2 * value
            } else if index % 2 == 1 {
                sparseEntry!.pendingOffset = value
            } else {
                try addFragment(offset: sparseEntry!.pendingOffset, length: value)
            }
        }
        if sparseEntry!.linesRead >= sparseEntry!.linesNeeded {
            try finishSparseEntry()
        } else if sparseEntry!.physicalSize - sparseEntry!.mapBytes < Int64(TarSyntax.blockSize) {
            throw failure("unexpected EOF", "the GNU sparse map runs past the entry's data", entry: sparseEntry!.view.displayName)
        }
    }

    /// Go's `validateSparseEntries`, one fragment at a time.
    private mutating func addFragment(offset: Int64, length: Int64) throws(LayerError) {
        let entry = sparseEntry!
        let size = entry.view.size
        guard size >= 0, offset >= 0, length >= 0, offset <= Int64.max - length, offset + length <= size,
              entry.previousEnd <= offset else {
            throw LayerError(.corruptArchive, entry: entry.view.displayName,
                             "tar: invalid tar header: sparse fragment \(offset)+\(length) is negative, out of order, overlapping or past the size \(size)")
        }
        sparseEntry!.previousEnd = offset + length
        sparseEntry!.dataSize += length
        sparseEntry!.fragments.add(offset: offset, length: length)
    }

    /// The sparse map is read: its data must be exactly what is stored.
    private mutating func finishSparseEntry() throws(LayerError) {
        var entry = sparseEntry!
        sparseEntry = nil
        if TarEntryView.isHeaderOnly(entry.view.typeflag) || entry.view.size < 0 {
            throw LayerError(.corruptArchive, entry: entry.view.displayName, "tar: invalid tar header: a sparse map on an entry without data")
        }
        let stored = entry.physicalSize - entry.mapBytes
        if entry.dataSize > stored {
            throw LayerError(.corruptArchive, entry: entry.view.displayName, "tar: sparse file references non-existent data (\(entry.dataSize) bytes mapped, \(stored) stored)")
        }
        if entry.dataSize < stored {
            throw LayerError(.corruptArchive, entry: entry.view.displayName, "tar: sparse file contains unreferenced data (\(entry.dataSize) bytes mapped, \(stored) stored)")
        }
        entry.view.sparse = entry.fragments.fingerprint(size: entry.view.size)
        enqueue(entry.view)
        state = .header
        if stored > 0 {
            state = .data(remaining: stored, padding: Self.padding(entry.physicalSize))
        } else if Self.padding(entry.physicalSize) > 0 {
            state = .padding(remaining: Self.padding(entry.physicalSize))
        }
    }

    // MARK: - Helpers

    private mutating func enqueue(_ view: TarEntryView) {
        views.append(view)
        pending = Pending()
    }

    private mutating func beginData(_ size: Int64) {
        let padding = Self.padding(size)
        if size > 0 { state = .data(remaining: size, padding: padding) }
        else { state = padding > 0 ? .padding(remaining: padding) : .header }
    }

    static func padding(_ size: Int64) -> Int64 { (-size) & Int64(TarSyntax.blockSize - 1) }

    /// The name to report for the entry being read: its long name or PAX path when known.
    private func entryName(_ fallback: [UInt8]?) -> String? {
        if !pending.longName.isEmpty { return TarSyntax.displayName(pending.longName) }
        if let path = pending.paxRecords?[Self.pathKey], !path.isEmpty { return TarSyntax.displayName(path) }
        if let fallback, !fallback.isEmpty { return TarSyntax.displayName(fallback) }
        return nil
    }

    private func failure(_ kind: String, _ detail: String, entry: String? = nil) -> LayerError {
        LayerError(.corruptArchive, entry: entry ?? entryName(nil), "tar: \(kind): \(detail)")
    }

    private static let xattrPrefix = Array("SCHILY.xattr.".utf8)
    private static let gnuSparsePrefix = Array("GNU.sparse.".utf8)
    private static let pathKey = Array("path".utf8)
    private static let linkpathKey = Array("linkpath".utf8)
    private static let uidKey = Array("uid".utf8)
    private static let gidKey = Array("gid".utf8)
    private static let sizeKey = Array("size".utf8)
    private static let mtimeKey = Array("mtime".utf8)
    private static let atimeKey = Array("atime".utf8)
    private static let ctimeKey = Array("ctime".utf8)
    private static let sunHolesKey = Array("SUN.holesdata".utf8)
    private static let sparseMajorKey = Array("GNU.sparse.major".utf8)
    private static let sparseMinorKey = Array("GNU.sparse.minor".utf8)
    private static let sparseNameKey = Array("GNU.sparse.name".utf8)
    private static let sparseSizeKey = Array("GNU.sparse.size".utf8)
    private static let sparseRealSizeKey = Array("GNU.sparse.realsize".utf8)
    private static let sparseNumBlocksKey = Array("GNU.sparse.numblocks".utf8)
    private static let digit0 = [UInt8(ascii: "0")]
    private static let digit1 = [UInt8(ascii: "1")]
}
