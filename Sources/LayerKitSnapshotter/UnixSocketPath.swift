import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The server's socket path: checked before binding, removed after serving, and only if it is
/// still the socket this server bound (never another server's, nor a file someone put there).
final class UnixSocketPath: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Absolute.
    let path: String
    private let lock = NSLock()
    private var bound: (device: UInt64, inode: UInt64)?

    private init(path: String) {
        self.path = path
    }

    /// Checks that `path` can be served on: absent (its parent dir is created), or a socket no
    /// one listens on any more (removed). A socket a live server answers on, or any other file,
    /// is refused.
    static func claim(_ path: String) throws(Failure) -> UnixSocketPath {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        guard absolute.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
            throw Failure(description: "socket path \(absolute.debugDescription) is too long for a unix socket (at most 107 bytes)")
        }
        var st = stat()
        if lstat(absolute, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw Failure(description: "\(absolute): exists and is not a socket; not replacing it")
            }
            if isAnswering(absolute) {
                throw Failure(description: "\(absolute): another server is listening on this socket")
            }
            guard unlink(absolute) == 0 || errno == ENOENT else {
                throw Failure(description: "\(absolute): cannot remove the stale socket: \(String(cString: strerror(errno)))")
            }
        } else {
            let parent = (absolute as NSString).deletingLastPathComponent
            do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
                throw Failure(description: "\(parent): cannot create the socket's directory: \(error.localizedDescription)")
            }
        }
        return UnixSocketPath(path: absolute)
    }

    /// Notes which file is ours, once the server is listening, and makes it reachable by its
    /// owner only (containerd runs as the same user: root).
    func recordBound() {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else { return }
        chmod(path, 0o600)
        lock.withLock { bound = (UInt64(st.st_dev), UInt64(st.st_ino)) }
    }

    /// Removes the socket file if it is still the one this server bound.
    func remove() {
        lock.withLock {
            var st = stat()
            guard let bound, lstat(path, &st) == 0, UInt64(st.st_dev) == bound.device, UInt64(st.st_ino) == bound.inode else { return }
            unlink(path)
            self.bound = nil
        }
    }

    /// Whether something accepts connections on the socket at `path`.
    static func isAnswering(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    }
}
