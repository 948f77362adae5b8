import CLayerSys
import Foundation
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Builds random trees and random changes to them, with plain syscalls. A step whose target an
/// earlier change removed (a file in a deleted dir) does nothing: its syscalls fail, and their
/// results are not checked.
struct TreeGenerator {
    var rng: SeededRandom
    let root: String
    var files: [String] = []
    var dirs: [String] = [""]

    static let oddNames = ["plain", "with space", "café", "ünïcödé-名前", "dash-", ".hidden", "a.b.c", "x",
                           String(repeating: "long", count: 30), "wh.notawhiteout", "tab\tname", "quote\"d"]

    mutating func name() -> String {
        let base = Self.oddNames[Int(rng.next() % UInt64(Self.oddNames.count))]
        return "\(base)-\(rng.next() % 10_000)"
    }

    func full(_ rel: String) -> String { rel.isEmpty ? root : root + "/" + rel }

    mutating func randomDir() -> String { dirs[Int(rng.next() % UInt64(dirs.count))] }

    mutating func content() -> Data {
        let size = [0, 1, 100, 511, 512, 513, 4096, 70_000][Int(rng.next() % 8)]
        return Data((0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }

    /// mtimes with and without a sub-second part, as real trees have both.
    mutating func setTimes(_ path: String) {
        let sec = 1_600_000_000 + Int(rng.next() % 100_000_000)
        let nsec = rng.next() % 2 == 0 ? 0 : Int(rng.next() % 1_000_000_000)
        var times = [timespec(tv_sec: sec, tv_nsec: nsec), timespec(tv_sec: sec, tv_nsec: nsec)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    mutating func addEntry() {
        let dir = randomDir()
        let rel = dir.isEmpty ? name() : dir + "/" + name()
        let path = full(rel)
        switch rng.next() % 10 {
        case 0, 1:
            mkdir(path, 0o755)
            if rng.next() % 3 == 0 { chmod(path, 0o750) }
            dirs.append(rel)
        case 2:
            symlink(["../x", "/etc/passwd", "target", String(repeating: "deep/", count: 25)][Int(rng.next() % 4)], path)
        case 3 where !files.isEmpty:
            let target = files[Int(rng.next() % UInt64(files.count))]
            if link(full(target), path) == 0 { files.append(rel) }
        case 4 where isRoot:
            mkfifo(path, 0o640)
        case 5 where isRoot:
            mknod(path, 0o020644, makedevForTest(UInt32(1 + rng.next() % 10), UInt32(rng.next() % 300)))
        default:
            _ = FileManager.default.createFile(atPath: path, contents: content())
            chmod(path, [0o644, 0o755, 0o600, 0o4755, 0o2755][Int(rng.next() % 5)])
            if isRoot && rng.next() % 4 == 0 { chown(path, 1000, 1000); chmod(path, 0o644) }
            if rng.next() % 4 == 0 { setxattr(path, "user.test", "v\(rng.next() % 3)", 2, 0) }
            files.append(rel)
        }
        setTimes(path)
    }

    /// One random change of the kinds a container makes.
    mutating func mutate() {
        guard files.count > 2 && dirs.count > 2 else { addEntry(); return }
        let f = files[Int(rng.next() % UInt64(files.count))]
        let p = full(f)
        var st = stat()
        guard lstat(p, &st) == 0 else { addEntry(); return }
        switch rng.next() % 11 {
        case 0: addEntry()
        case 1: unlink(p)                                         // delete a file
        case 2:                                                   // delete a dir tree
            let d = dirs[1 + Int(rng.next() % UInt64(dirs.count - 1))]
            try? FileManager.default.removeItem(atPath: full(d))
        case 3:                                                   // file -> dir
            unlink(p); mkdir(p, 0o755)
            _ = FileManager.default.createFile(atPath: p + "/inside", contents: Data("in".utf8))
        case 4:                                                   // dir -> file
            let d = dirs[1 + Int(rng.next() % UInt64(dirs.count - 1))]
            try? FileManager.default.removeItem(atPath: full(d))
            _ = FileManager.default.createFile(atPath: full(d), contents: Data("was a dir".utf8))
        case 5:                                                   // file -> symlink
            unlink(p); symlink("elsewhere", p)
        case 6: chmod(p, 0o600)                                   // metadata only
        case 7 where isRoot: chown(p, 42, 43)
        case 8:                                                   // same size, same mtime, new content
            if FileSystem.fileType(st) == 0o100000 && st.st_size > 0 {
                let fd = open(p, O_WRONLY)
                var b: UInt8 = 0
                pread(fd, &b, 1, 0)
                var flipped = b ^ 0xff
                pwrite(fd, &flipped, 1, 0)
                close(fd)
                var times = [st.st_atim, timespec(tv_sec: st.st_mtim.tv_sec, tv_nsec: 0)]
                // Restore the mtime (whole seconds, as in a tar-extracted tree).
                utimensat(AT_FDCWD, p, &times, 0)
            }
        case 9:                                                   // hardlink added / broken
            if st.st_nlink > 1 {
                let data = FileManager.default.contents(atPath: p)
                unlink(p)
                _ = FileManager.default.createFile(atPath: p, contents: data)
            } else {
                let other = full(randomDir()) + "/hl-\(rng.next() % 1000)"
                link(p, other)
            }
        default:
            setxattr(p, "user.changed", "1", 1, 0)
        }
    }
}
