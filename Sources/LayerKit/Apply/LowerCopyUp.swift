import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The layers below an overlay-format layer being written, top first: where a hardlink entry's
/// target is found when this layer does not have it. The file is copied up into this layer
/// (content with its holes, owner, mode, times) so the link can be made, as overlayfs does.
struct LowerLayers {
    let directories: [String]

    var isEmpty: Bool { directories.isEmpty }

    /// Copies the regular file at `path` from the topmost lower layer that has it into the layer
    /// open as `resolver`'s root, creating its parents on the way.
    func copyUp(_ path: EntryPath, into resolver: ConfinedResolver) throws(LayerError) {
        for lower in directories {
            let lowerRoot = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard lowerRoot >= 0 else { continue }
            defer { close(lowerRoot) }
            let source = FileSystem.openInRoot(lowerRoot, path.bytes, flags: O_RDONLY | O_NOFOLLOW)
            guard source >= 0 else { continue }
            defer { close(source) }
            guard let st = FileSystem.attributes(of: source), FileSystem.isRegularFile(st) else { continue }
            let parentFD = try resolver.directory(path.parent, create: true)
            let output = withCString(path.name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
            guard output >= 0 else { throw .system(Errno(rawValue: errno), entry: path.description, "cannot copy up from lower layer") }
            defer { close(output) }
            do throws(Errno) { try DataCopy.copySparse(from: source, to: output, size: Int64(st.st_size)) } catch {
                throw .system(error, entry: path.description, "cannot copy up from lower layer")
            }
            _ = fchown(output, st.st_uid, st.st_gid)
            _ = fchmod(output, st.st_mode & 0o7777)
            var times = [st.st_atim, st.st_mtim]
            _ = futimens(output, &times)
            return
        }
        throw LayerError(.invalidEntry, entry: path.description, "hardlink target not found in this layer or below")
    }
}
