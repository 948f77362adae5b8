import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A position in a directory tree that moves down and up one level at a time with a single open
/// fd: the explicit stack a tree walk uses instead of recursion, so a tree of any depth costs a
/// name and an inode number per level, never a stack frame or an fd per level.
///
/// Going down opens the child with `O_NOFOLLOW` (a symlink is never entered). Going up opens `..`
/// and checks that it is the directory the cursor came down from (device and inode): a tree
/// rearranged under the walk makes it fail with `ESTALE` instead of going somewhere else.
final class DirectoryCursor {
    /// The directory the walk started in; owned by the caller.
    let rootFD: Int32
    /// The current directory (`rootFD` at depth 0).
    private(set) var fd: Int32
    /// For each level below the root: the name of the dir entered, and the identity of the dir it
    /// was entered from.
    private var trail: [(name: [UInt8], parentDevice: UInt64, parentInode: UInt64)] = []
    /// The current directory's metadata.
    private(set) var current: stat

    init(root rootFD: Int32) throws(Errno) {
        self.rootFD = rootFD
        self.fd = rootFD
        guard let st = FileSystem.attributes(of: rootFD) else { throw Errno(rawValue: errno) }
        current = st
    }

    deinit { if fd != rootFD { close(fd) } }

    /// How many levels below the root the cursor is.
    var depth: Int { trail.count }

    /// The names from the root down to the current directory.
    var names: [[UInt8]] { trail.map(\.name) }

    /// Enters the subdirectory `name` of the current directory and returns its metadata.
    @discardableResult
    func descend(_ name: [UInt8]) throws(Errno) -> stat {
        let child = try FileSystem.openDirectory(fd, name)
        guard let st = FileSystem.attributes(of: child) else {
            let e = Errno(rawValue: errno)
            close(child)
            throw e
        }
        trail.append((name, UInt64(current.st_dev), UInt64(current.st_ino)))
        if fd != rootFD { close(fd) }
        fd = child
        current = st
        return st
    }

    /// Goes back to the parent of the current directory and returns the name of the one left.
    @discardableResult
    func ascend() throws(Errno) -> [UInt8] {
        guard let step = trail.popLast() else { throw .invalidArgument }
        let parent: Int32
        if trail.isEmpty {
            parent = rootFD
        } else {
            parent = try FileSystem.openDirectory(fd, FileSystem.dotDot)
        }
        guard let st = FileSystem.attributes(of: parent), UInt64(st.st_dev) == step.parentDevice, UInt64(st.st_ino) == step.parentInode else {
            if parent != rootFD { close(parent) }
            throw .staleNFSFileHandle
        }
        if fd != rootFD { close(fd) }
        fd = parent
        current = st
        return step.name
    }
}
