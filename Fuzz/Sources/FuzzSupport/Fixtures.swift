import CFuzzSys
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Small trees the targets start from.
public enum Fixtures {
    /// A dir an input must leave alone: a file, a subdir, a symlink, an executable.
    public static func makeSentinel(at path: String) {
        mkdir(path, 0o755)
        Scratch.write(Array("sentinel: must not change\n".utf8), to: path + "/file")
        mkdir(path + "/dir", 0o700)
        Scratch.write(Array("#!/bin/sh\n".utf8), to: path + "/dir/script")
        chmod(path + "/dir/script", 0o755)
        symlink("file", path + "/link")
    }

    /// A layer in overlayfs form: dirs, files, a symlink, a hardlink pair, a whiteout device,
    /// an opaque dir.
    public static func makeLowerLayer(at path: String) {
        TreeRemover.remove(path)
        mkdir(path, 0o755)
        for dir in ["etc", "bin", "usr", "usr/lib", "opaque", "var"] { mkdir(path + "/" + dir, 0o755) }
        Scratch.write(Array("root:x:0:0:root:/root:/bin/sh\n".utf8), to: path + "/etc/passwd")
        Scratch.write(Array("lower\n".utf8), to: path + "/etc/hostname")
        Scratch.write(Array("#!/bin/sh\necho lower\n".utf8), to: path + "/bin/tool")
        chmod(path + "/bin/tool", 0o4755)
        link(path + "/bin/tool", path + "/usr/lib/tool-link")
        symlink("../etc", path + "/usr/etc-link")
        symlink("/etc/passwd", path + "/usr/abs-link")
        mknod(path + "/var/gone", S_IFCHR, 0)
        fuzz_setxattr(path + "/opaque", "trusted.overlay.opaque", "y", 1)
        Scratch.write(Array("in opaque\n".utf8), to: path + "/opaque/kept")
        fuzz_setxattr(path + "/etc/hostname", "user.origin", "lower", 5)
    }

    /// A destination that already has content (an in-place unpack).
    public static func makeExistingTree(at path: String) {
        mkdir(path, 0o755)
        for dir in ["etc", "dir", "dir/sub", "tmp"] { mkdir(path + "/" + dir, 0o755) }
        Scratch.write(Array("existing\n".utf8), to: path + "/etc/hostname")
        Scratch.write(Array("hello, world\n".utf8), to: path + "/dir/file.txt")
        Scratch.write(Array("nested\n".utf8), to: path + "/dir/sub/nested.txt")
        symlink("file.txt", path + "/dir/symlink")
        symlink("/etc", path + "/abs")
        chmod(path + "/tmp", 0o1777)
    }
}
