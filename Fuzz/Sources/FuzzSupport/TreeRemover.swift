#if canImport(Glibc)
import Glibc
#endif

/// Removes a tree the harness made or an input filled, of any depth (paths longer than
/// `PATH_MAX` included): descends through descriptors one dir at a time, removes symlinks and
/// never follows them.
public enum TreeRemover {
    public static func remove(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT != S_IFDIR {
            unlink(path)
            return
        }
        var fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { Invariant.fail("cannot open \(path) to remove it: \(String(cString: strerror(errno)))") }
        var names = [[CChar]]()  // the dirs entered below `path` (raw names: any bytes)
        while true {
            if let sub = clearFiles(fd) {
                let child = openat(fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else { Invariant.fail("cannot open \(Invariant.cString(sub)) to remove it: \(String(cString: strerror(errno)))") }
                close(fd)
                fd = child
                names.append(sub)
                continue
            }
            guard let done = names.popLast() else { break }
            let parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            close(fd)
            guard parent >= 0 else { Invariant.fail("cannot go back up while removing \(path)") }
            fd = parent
            if unlinkat(fd, done, AT_REMOVEDIR) != 0 { Invariant.fail("cannot remove a dir below \(path): \(String(cString: strerror(errno)))") }
        }
        close(fd)
        if rmdir(path) != 0 { Invariant.fail("cannot remove \(path) between inputs: \(String(cString: strerror(errno)))") }
    }

    /// Removes every non-dir in the dir open at `fd`; returns a subdir, if there is one.
    private static func clearFiles(_ fd: Int32) -> [CChar]? {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else { Invariant.fail("cannot read a dir to remove it") }
        defer { closedir(dir) }
        var subdir: [CChar]?
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                let chars = raw.bindMemory(to: CChar.self)
                return Array(chars.prefix(strlen(chars.baseAddress!) + 1))
            }
            if name == [0x2e, 0] || name == [0x2e, 0x2e, 0] { continue }
            var st = stat()
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if st.st_mode & S_IFMT == S_IFDIR {
                if subdir == nil { subdir = name }
            } else if unlinkat(fd, name, 0) != 0 {
                Invariant.fail("cannot remove \(Invariant.cString(name)): \(String(cString: strerror(errno)))")
            }
        }
        return subdir
    }
}
