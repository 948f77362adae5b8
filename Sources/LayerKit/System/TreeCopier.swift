import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Copies a tree as it is — dirs, files (in the kernel, holes kept: `DataCopy`), symlinks,
/// devices (whiteout devices included), fifos, hardlink groups, owners, modes, times and the
/// xattrs `keepsXattr` accepts — into an empty directory. Sockets are left out.
///
/// Iterative, with one open dir per side (`DirectoryCursor`): a tree of any depth is copied with a
/// pending list per level. Returns the bytes the copy takes on disk (its blocks), counted as it goes.
struct TreeCopier {
    /// Which xattrs go with the copy.
    var keepsXattr: (String) -> Bool
    /// Whether owners are copied (they can only be, as root).
    var copiesOwners = geteuid() == 0
    /// Stop with `EINVAL` at a `.wh.` name (an aufs-form upper dir, which is not a layer dir as it is).
    var refusesMarkerNames = false
    /// The times given to whiteout devices (0/0), as a layer's whiteout markers carry them; nil
    /// keeps their own.
    var whiteoutTime: timespec? = nil

    /// Copies everything below the dir open at `sourceFD` into the empty dir open at `targetFD`,
    /// and the source root's own metadata onto the target root.
    func copy(from sourceFD: Int32, to targetFD: Int32) throws(Errno) -> Int64 {
        var usage: Int64 = 0
        var linked = [InodeKey: (dir: [[UInt8]], name: [UInt8])]()
        let source = try DirectoryCursor(root: sourceFD)
        let target = try DirectoryCursor(root: targetFD)
        // Each level's names still to copy, last first (so the next one is popped off the end).
        var pending = [Array(try FileSystem.sortedNames(of: sourceFD).reversed())]
        while !pending.isEmpty {
            guard let name = pending[pending.count - 1].popLast() else {
                pending.removeLast()
                // The dir is complete: its own metadata last (its times would move otherwise).
                try copyMetadata(of: source.fd, to: target.fd)
                if let st = FileSystem.attributes(of: target.fd) { usage += Int64(st.st_blocks) * 512 }
                if !pending.isEmpty {
                    try source.ascend()
                    try target.ascend()
                }
                continue
            }
            if refusesMarkerNames, LayerFormat.isMarkerName(name) { throw .invalidArgument }
            guard let st = FileSystem.lstat(source.fd, name) else { throw Errno(rawValue: errno) }
            switch FileSystem.fileType(st) {
            case mode_t(LK_S_IFDIR):
                guard withCString(name, { mkdirat(target.fd, $0, 0o700) }) == 0 else { throw Errno(rawValue: errno) }
                try source.descend(name)
                try target.descend(name)
                pending.append(Array(try FileSystem.sortedNames(of: source.fd).reversed()))
            case mode_t(LK_S_IFREG):
                if st.st_nlink > 1, let first = linked[InodeKey(st)] {
                    // Another name of a file already copied: a link to the copy.
                    let firstPath = (first.dir + [first.name]).map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
                    guard withCString(Array(firstPath.utf8), { f in withCString(name) { linkat(targetFD, f, target.fd, $0, 0) } }) == 0 else {
                        throw Errno(rawValue: errno)
                    }
                    continue
                }
                usage += try copyFile(name, st, from: source.fd, to: target.fd)
                if st.st_nlink > 1 { linked[InodeKey(st)] = (target.names, name) }
            case mode_t(LK_S_IFSOCK):
                continue
            case mode_t(LK_S_IFLNK):
                let link = try FileSystem.readLink(source.fd, name)
                guard withCString(link, { l in withCString(name) { symlinkat(l, target.fd, $0) } }) == 0 else { throw Errno(rawValue: errno) }
                try finishNode(name, st, in: target.fd, from: source.fd)
                usage += Int64(FileSystem.lstat(target.fd, name)?.st_blocks ?? 0) * 512
            default:
                guard withCString(name, { mknodat(target.fd, $0, st.st_mode, st.st_rdev) }) == 0 else { throw Errno(rawValue: errno) }
                try finishNode(name, st, in: target.fd, from: source.fd)
            }
        }
        return usage
    }

    private func copyFile(_ name: [UInt8], _ st: stat, from sourceDir: Int32, to targetDir: Int32) throws(Errno) -> Int64 {
        let input = withCString(name) { openat(sourceDir, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard input >= 0 else { throw Errno(rawValue: errno) }
        defer { close(input) }
        let output = withCString(name) { openat(targetDir, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        guard output >= 0 else { throw Errno(rawValue: errno) }
        defer { close(output) }
        try DataCopy.copySparse(from: input, to: output, size: Int64(st.st_size))
        try copyMetadata(of: input, to: output)
        return Int64(FileSystem.attributes(of: output)?.st_blocks ?? 0) * 512
    }

    /// Owner, mode, xattrs and times from one open file or dir onto another.
    private func copyMetadata(of source: Int32, to target: Int32) throws(Errno) {
        guard let st = FileSystem.attributes(of: source) else { throw Errno(rawValue: errno) }
        if copiesOwners && fchown(target, st.st_uid, st.st_gid) != 0 { throw Errno(rawValue: errno) }
        if fchmod(target, st.st_mode & 0o7777) != 0 { throw Errno(rawValue: errno) }
        for attribute in Xattrs.all(fd: source) where keepsXattr(attribute.name) {
            if attribute.value.withUnsafeBytes({ fsetxattr(target, attribute.name, $0.baseAddress, $0.count, 0) }) != 0 {
                throw Errno(rawValue: errno)
            }
        }
        var times = [st.st_atim, st.st_mtim]
        if futimens(target, &times) != 0 { throw Errno(rawValue: errno) }
    }

    /// Owner, mode and times of a symlink or node, by name.
    private func finishNode(_ name: [UInt8], _ st: stat, in targetDir: Int32, from sourceDir: Int32) throws(Errno) {
        if copiesOwners && withCString(name, { fchownat(targetDir, $0, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) }) != 0 {
            throw Errno(rawValue: errno)
        }
        if !FileSystem.isSymlink(st) && withCString(name, { fchmodat(targetDir, $0, st.st_mode & 0o7777, 0) }) != 0 {
            throw Errno(rawValue: errno)
        }
        if !FileSystem.isSymlink(st) {
            for attribute in Xattrs.all(sourceDir, name) where keepsXattr(attribute.name) {
                let path = "/proc/self/fd/\(targetDir)/" + String(decoding: name, as: UTF8.self)
                _ = attribute.value.withUnsafeBytes { lsetxattr(path, attribute.name, $0.baseAddress, $0.count, 0) }
            }
        }
        var times = [st.st_atim, st.st_mtim]
        if let whiteoutTime, LayerFormat.isWhiteoutDevice(st) { times = [whiteoutTime, whiteoutTime] }
        if withCString(name, { utimensat(targetDir, $0, &times, AT_SYMLINK_NOFOLLOW) }) != 0 { throw Errno(rawValue: errno) }
    }
}
