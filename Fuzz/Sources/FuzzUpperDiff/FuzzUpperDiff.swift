// Fuzz target `upper-diff`: the input is a small program that builds an overlayfs (or aufs-form)
// upper dir: files, dirs, symlinks, hardlinks, fifos, devices, whiteout devices, opaque xattrs,
// aufs `.wh.` markers and bookkeeping, overlayfs's own xattrs, odd modes and owners, deep nests.
// `LayerDiffer().write(.upper(dir))` turns it into a layer, which LayerKit must then read back:
// `inspect(validate: true)` agrees on the entry count and digests, and the layer applies in
// overlay format onto an empty dir. Nothing outside the upper dir changes; no descriptor leaks.
import CFuzzSys
import FuzzSupport
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    UpperDiffFuzz.setUp()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    UpperDiffFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

enum UpperDiffFuzz {
    nonisolated(unsafe) static var sentinelSignature: TreeSignature!
    nonisolated(unsafe) static var lowerSignature: TreeSignature!
    static var lower: String { Scratch.root + "/lower" }

    static func setUp() {
        Scratch.setUp()
        Fixtures.makeLowerLayer(at: lower)
        lowerSignature = TreeSignature(of: lower)
        let probe = Scratch.freshRun()
        Fixtures.makeSentinel(at: probe + "/sentinel")
        sentinelSignature = TreeSignature(of: probe + "/sentinel")
    }

    static func run(_ bytes: UnsafeRawBufferPointer) {
        let run = Scratch.freshRun()
        Fixtures.makeSentinel(at: run + "/sentinel")
        let upper = run + "/upper"
        mkdir(upper, 0o755)
        var input = FuzzInput(bytes)
        let settings = input.byte()
        var builder = UpperBuilder(root: upper)
        builder.build(&input)

        var options = DiffOptions(compression: [.none, .none, .gzip, .zstd][Int(settings & 3)], threads: 1)
        options.sourceDateEpoch = settings & 4 != 0 ? 1_700_000_000 : nil
        let source = ChangeSource.upper(upper, lowerRoot: settings & 8 != 0 ? lower : nil)
        let layer = run + "/layer"
        let written = Invariant.noDescriptorLeak("diff") {
            Result { () throws(LayerError) in try LayerDiffer(options: options).write(source, toFile: layer) }
        }
        switch written {
        case .failure(let e):
            Invariant.oneLine(e.description, "diff")
        case .success(let result):
            let inspected = Invariant.noDescriptorLeak("inspect") {
                Result { () throws(LayerError) in try LayerApplier().inspect(.path(layer), validate: true) }
            }
            switch inspected {
            case .failure(let e):
                Invariant.fail("LayerKit cannot read the layer it wrote: \(e)")
            case .success(let summary):
                if summary.entryCount != result.entryCount {
                    Invariant.fail("the differ wrote \(result.entryCount) entries, inspect reads \(summary.entryCount)")
                }
                if summary.diffID != result.diffID || summary.blobDigest != result.descriptor.digest || summary.blobSize != result.descriptor.size {
                    Invariant.fail("the differ's digests differ from inspect's: \(result) vs \(summary)")
                }
            }
            let target = run + "/applied"
            mkdir(target, 0o755)
            let applied = Invariant.noDescriptorLeak("apply") {
                Result { () throws(LayerError) in
                    try LayerApplier(options: ApplyOptions(format: .overlay(.trusted))).apply(.path(layer), to: target)
                }
            }
            if case .failure(let e) = applied { Invariant.fail("LayerKit cannot apply the layer it wrote: \(e)") }
        }

        let names = Set(TreeSignature.names(run))
        if !names.isSubset(of: ["sentinel", "upper", "layer", "applied"]) {
            Invariant.fail("something was created beside the upper dir: \(names.sorted())")
        }
        let sentinel = TreeSignature(of: run + "/sentinel")
        if sentinel != sentinelSignature { Invariant.fail("the sentinel changed:\n\(sentinel.difference(from: sentinelSignature))") }
        let nowLower = TreeSignature(of: lower)
        if nowLower != lowerSignature { Invariant.fail("the lower dir changed:\n\(nowLower.difference(from: lowerSignature))") }
    }
}

/// Builds an upper dir from an input, one operation per step.
struct UpperBuilder {
    let root: String
    /// The dirs entered, relative to the root.
    var stack: [String] = []
    var files: [String] = []
    var last: String?
    var steps = 0

    init(root: String) { self.root = root }

    var current: String { stack.last.map { root + "/" + $0 } ?? root }

    static let names: [String] = [
        "a", "b", "c", "dir", "file", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..wh.plnk", ".wh..wh.aufs", ".wh.",
        ".wh..", ".wh...", ".wh..wh..opq.x", "caf\u{e9}", "with space", "new\nline", String(repeating: "n", count: 255),
        ".layertool-partial-1", "PaxHeaders", "..a", "-",
    ]

    mutating func name(_ input: inout FuzzInput) -> String {
        let pick = Int(input.byte())
        if pick < Self.names.count * 8 { return Self.names[pick % Self.names.count] }
        // A name of the input's own bytes: no `/`, no NUL, not `.` or `..`.
        var raw = input.bytes(upTo: 64).filter { $0 != 0 && $0 != UInt8(ascii: "/") }
        if raw.isEmpty || raw == [0x2e] || raw == [0x2e, 0x2e] { raw = Array("x".utf8) }
        return String(decoding: raw, as: UTF8.self).isEmpty ? "x" : String(decoding: raw, as: UTF8.self)
    }

    func path(_ name: String) -> String { current + "/" + name }

    mutating func build(_ input: inout FuzzInput) {
        while !input.isAtEnd && steps < 512 {
            steps += 1
            let op = input.below(22)
            switch op {
            case 0:  // mkdir and enter
                let n = name(&input)
                let p = path(n)
                if mkdir(p, mode_t(0o755)) == 0 || errno == EEXIST {
                    var st = stat()
                    if lstat(p, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR && stack.count < 64 {
                        stack.append(stack.last.map { $0 + "/" + n } ?? n)
                    }
                }
                last = p
            case 1:  // leave
                _ = stack.popLast()
            case 2:  // regular file
                let p = path(name(&input))
                let content = input.bytes(upTo: 200)
                let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK, 0o644)
                if fd >= 0 {
                    _ = content.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    close(fd)
                    files.append(p)
                }
                last = p
            case 3:  // symlink
                let p = path(name(&input))
                let targets = ["../../..", "/etc/passwd", "a", "", "/", "..", String(repeating: "../", count: 40) + "tmp",
                               String(repeating: "t", count: 300)]
                let pick = input.below(targets.count + 1)
                let target = pick < targets.count ? targets[pick] : String(decoding: input.bytes(upTo: 100).filter { $0 != 0 }, as: UTF8.self)
                symlink(target.isEmpty ? "x" : target, p)
                last = p
            case 4:  // overlayfs whiteout: char device 0/0
                let p = path(name(&input))
                mknod(p, S_IFCHR | 0o600, 0)
                last = p
            case 5:  // opaque dir xattr
                let values = ["y", "x", "", "yy", "n"]
                let value = values[input.below(values.count)]
                let key = ["trusted.overlay.opaque", "user.overlay.opaque"][input.below(2)]
                fuzz_setxattr(current, key, value, value.utf8.count)
            case 6:  // aufs whiteout
                let p = path(".wh." + name(&input))
                close(open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o444))
                last = p
            case 7:  // aufs opaque marker
                close(open(path(".wh..wh..opq"), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o444))
            case 8:  // aufs bookkeeping dir with something inside
                let p = path(".wh..wh.plnk")
                mkdir(p, 0o700)
                close(open(p + "/123.456", O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o444))
            case 9:  // hardlink to an earlier file
                guard !files.isEmpty else { break }
                let target = files[input.below(files.count)]
                let p = path(name(&input))
                if link(target, p) == 0 { files.append(p) }
                last = p
            case 10:  // an xattr on the last entry
                guard let last else { break }
                let keys = ["user.test", "trusted.x", "security.capability", "trusted.overlay.redirect", "trusted.overlay.origin",
                            "trusted.overlay.metacopy", "user.overlay.redirect", "system.posix_acl_access", "user." + String(repeating: "k", count: 200)]
                let key = keys[input.below(keys.count)]
                let value = input.bytes(upTo: 255)
                value.withUnsafeBytes { _ = fuzz_lsetxattr(last, key, $0.baseAddress, $0.count) }
            case 11:  // chmod
                guard let last else { break }
                let mode = mode_t(input.uint16() & 0o7777)
                var st = stat()
                if lstat(last, &st) == 0 && st.st_mode & S_IFMT != S_IFLNK { chmod(last, mode) }
            case 12:  // chown
                guard let last else { break }
                let uid = [0, 1000, 65534, 2_000_000, Int(UInt32.max - 1)][input.below(5)]
                lchown(last, uid_t(uid), gid_t(input.below(2) == 0 ? uid : 0))
            case 13:  // fifo
                let p = path(name(&input))
                mkfifo(p, 0o644)
                last = p
            case 14:  // another device node
                let p = path(name(&input))
                let type = input.below(2) == 0 ? S_IFCHR : S_IFBLK
                let major = UInt32(input.byte()), minor = UInt32(input.uint16())
                mknod(p, type | 0o600, fuzz_makedev(major, minor))
                last = p
            case 15:  // mtime
                guard let last else { break }
                let seconds = Int(Int32(bitPattern: input.uint32()))
                var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: Int(input.byte()) * 3_000_000)]
                utimensat(AT_FDCWD, last, &times, AT_SYMLINK_NOFOLLOW)
            case 16:  // a deep nest of dirs
                let depth = 1 + input.below(200)
                var p = current
                for _ in 0..<depth {
                    p += "/d"
                    if mkdir(p, 0o755) != 0 { break }
                }
                close(open(p + "/leaf", O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o644))
                last = p
            case 17:  // a sparse file
                let p = path(name(&input))
                let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK, 0o644)
                if fd >= 0 {
                    let offset = off_t(input.uint16()) * 4096
                    let data = input.bytes(upTo: 64)
                    _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
                    if input.below(2) == 0 { ftruncate(fd, offset + off_t(1 << 20)) }
                    close(fd)
                    files.append(p)
                }
                last = p
            case 18:  // a socket node (skipped by the differ)
                let p = path(name(&input))
                mknod(p, S_IFSOCK | 0o644, 0)
                last = p
            case 19:  // remove something made earlier
                guard let last else { break }
                if unlink(last) != 0 { rmdir(last) }
                self.last = nil
            case 20:  // the root's own metadata
                chmod(root, mode_t(0o700 | (input.uint16() & 0o7077)))
            default:  // a long path made of long names
                var p = current
                for _ in 0..<(1 + input.below(20)) {
                    p += "/" + String(repeating: "L", count: 200)
                    if mkdir(p, 0o755) != 0 { break }
                }
                last = p
            }
        }
    }
}
