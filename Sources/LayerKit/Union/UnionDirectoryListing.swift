import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One name in a merged directory listing.
public struct UnionDirectoryEntry: Sendable, Equatable {
    public let name: [UInt8]
    /// The `d_type` (DT_REG, DT_DIR...) of the entry in the layer that provides it.
    public let type: UInt8
    public init(name: [UInt8], type: UInt8) {
        self.name = name
        self.type = type
    }
}

extension UnionFileSystem {
    /// The merged listing of a dir: the upper's names first, then each lower's names not seen
    /// above; whiteouts and opaque dirs hide the names below them; markers are never listed. A
    /// dir removed while it was open (or someone's cwd) lists empty.
    public func readDirectory(_ ino: UInt64) throws(UnionError) -> [UnionDirectoryEntry] {
        try mutex.locked { () throws(UnionError) -> [UnionDirectoryEntry] in
            if let node = nodes[ino], node.heldFD != nil {
                guard node.isDirectory else { throw .with(ENOTDIR, "readdir", []) }
                return []
            }
            let (dir, path) = try directory(ino, "readdir")
            return try mergedListing(dir, path)
        }
    }

    /// Callers hold the mutex.
    func mergedListing(_ dir: UnionNode, _ path: [UInt8]) throws(UnionError) -> [UnionDirectoryEntry] {
        var seen = Set<[UInt8]>()
        var entries: [UnionDirectoryEntry] = []
        for (index, layer) in dir.dirLayers.enumerated() {
            let names: [FileSystem.DirectoryEntry]
            do throws(Errno) { names = try FileSystem.entries(layers.fds[layer], path) } catch {
                // A lower dir that vanished under the mount contributes nothing; the upper must be there.
                if index > 0 && (error == .noSuchFileOrDirectory || error == .notDirectory) { continue }
                throw .with(error.rawValue, "readdir", path)
            }
            let below = index + 1 < dir.dirLayers.count
            for entry in names {
                let (name, type) = (entry.name, entry.type)
                if seen.contains(name) { continue }
                switch layers.classify(layer, dir: path, name: name, type: type) {
                case .marker:
                    continue
                case .whiteout(let hidden):
                    if below { seen.insert(hidden) }
                    continue
                case .entry:
                    seen.insert(name)
                    entries.append(UnionDirectoryEntry(name: name, type: type))
                }
            }
        }
        return entries
    }

    /// Whether a dir shows no entry at all.
    func isEmptyInUnion(_ dir: UnionNode, _ path: [UInt8]) throws(UnionError) -> Bool {
        try mergedListing(dir, path).isEmpty
    }
}
