import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A directory beside a destination where work is built before it is renamed into place
/// (`.DEST.layertool-XXXXXX`). Its creator holds an exclusive `flock` on it for as long as it
/// lives, so the next run on the same destination can tell a leftover of a killed run (nobody
/// holds its lock) from the work of a run still going, and removes only the former.
final class StagingDirectory {
    let path: String
    private let lockFD: Int32
    private var kept = false

    /// The prefix of the staging dirs beside `destination`.
    static func prefix(for destination: String) -> (dir: String, namePrefix: String) {
        let (dir, base) = FileSystem.split(destination)
        return (dir, ".\(base).layertool-")
    }

    /// Makes a staging dir beside `destination` (`kind` tells what it holds, for people).
    init(beside destination: String, kind: String = "") throws(LayerError) {
        let (dir, prefix) = Self.prefix(for: destination)
        var template = Array("\(dir)/\(prefix)\(kind)XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot create a staging directory in \(dir)").inLayer(destination)
        }
        path = String(cString: made)
        lockFD = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            let e = Errno(rawValue: errno)
            rmdir(path)
            throw LayerError.system(e, entry: nil, "cannot lock the staging directory \(path)").inLayer(destination)
        }
    }

    deinit {
        if !kept { try? FileSystem.removeTree(atPath: path) }
        close(lockFD)
    }

    /// Renames the staging dir to `destination` (an empty dir there is replaced atomically).
    func commit(to destination: String) throws(LayerError) {
        if rename(path, destination) != 0 {
            throw LayerError.system(Errno(rawValue: errno), entry: nil, "cannot move the unpacked tree into place").inLayer(destination)
        }
        kept = true
    }

    /// Removes the staging dirs beside `destination` that their creators left behind (killed
    /// before they could remove them): those whose lock nobody holds.
    static func removeLeftovers(beside destination: String) {
        let (dir, prefix) = Self.prefix(for: destination)
        guard let fd = try? FileSystem.openDirectory(atPath: dir) else { return }
        defer { close(fd) }
        guard let names = try? FileSystem.names(of: fd) else { return }
        for name in names where name.starts(with: Array(prefix.utf8)) {
            guard let st = FileSystem.lstat(fd, name), FileSystem.isDirectory(st) else { continue }
            let candidate = withCString(name) { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard candidate >= 0 else { continue }
            defer { close(candidate) }
            // Free: its creator is gone. Held: a run in progress (leave it).
            guard flock(candidate, LOCK_EX | LOCK_NB) == 0 else { continue }
            try? FileSystem.removeTree(fd, name)
        }
    }
}
