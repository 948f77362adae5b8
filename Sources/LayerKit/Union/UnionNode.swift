#if canImport(Glibc)
import Glibc
#endif

/// One entry of the union's inode table: a name (or several, for hardlinks in the upper) in the
/// merged tree, where it lives now, and how many times the kernel has looked it up. Its number
/// stays the same for the life of the mount, across copy-up and rename.
final class UnionNode {
    let ino: UInt64
    /// Where the node is linked into the tree; the first is used to build its path. Empty once
    /// every name has been removed.
    var names: [(parent: UnionNode, name: [UInt8])]
    /// Children looked up so far, by name.
    var children: [[UInt8]: UnionNode] = [:]
    /// The topmost layer holding the entry (0 = upper).
    var layer: Int
    /// For a dir: every layer that contributes entries, top first, stopping at an opaque dir or
    /// at a layer where the name is not a dir.
    var dirLayers: [Int]
    /// The file type bits.
    var type: mode_t
    /// Outstanding kernel lookups (FUSE nlookup).
    var lookups: UInt64 = 0
    /// A copy-up of this file's content is running (with the union's mutex released).
    var copyingUp = false
    /// For an upper file with several names: its backing (dev, ino), the key all names share.
    var hardlinkKey: UnionFileSystem.HardlinkKey?
    /// Once its last name is gone while the kernel still holds it (an open fd, a cwd): an O_PATH
    /// fd on the backing entry, through which it is still reached (UnionHeldEntries.swift).
    /// Closed when the kernel forgets the node.
    var heldFD: Int32?

    init(ino: UInt64, parent: UnionNode?, name: [UInt8], layer: Int, dirLayers: [Int], type: mode_t) {
        self.ino = ino
        self.names = parent.map { [($0, name)] } ?? []
        self.layer = layer
        self.dirLayers = dirLayers
        self.type = type
    }

    var isDirectory: Bool { type == mode_t(0o040000) }
    var isRoot: Bool { ino == UnionFileSystem.rootInode }
    var isLinked: Bool { isRoot || !names.isEmpty }
    var parent: UnionNode? { names.first?.parent }

    /// The path in the union, relative to its root (`.` for the root); nil when unlinked.
    var path: [UInt8]? {
        if isRoot { return FileSystem.dot }
        var components: [[UInt8]] = []
        var node = self
        while !node.isRoot {
            guard let link = node.names.first else { return nil }
            components.append(link.name)
            node = link.parent
        }
        var out: [UInt8] = []
        out.reserveCapacity(components.reduce(0) { $0 + $1.count + 1 })
        for c in components.reversed() {
            if !out.isEmpty { out.append(FileSystem.slash) }
            out.append(contentsOf: c)
        }
        return out
    }

    /// Whether a layer below the upper contributes to this dir (then it cannot be renamed).
    var hasLowerContent: Bool { dirLayers.contains { $0 != UnionLayerStack.upper } }

    func removeName(parent: UnionNode, name: [UInt8]) {
        names.removeAll { $0.parent === parent && $0.name == name }
        if parent.children[name] === self { parent.children[name] = nil }
    }
}
