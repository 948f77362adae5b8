import CFuzzSys
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// The file system a fuzz target works in: one scratch dir per process, a `run/` dir inside it
/// made empty for every input, and `host/`, files that stand for the host's (an input must never
/// read, import or change them).
///
/// As root the scratch dir is a private tmpfs mounted `nodev,nosuid` at `/tmp/layerkit-fuzz`
/// in a mount namespace of the process's own: every fuzzer process sees its own, device nodes an
/// input makes cannot be opened (a fuzzed char device 10:130 would otherwise be the watchdog),
/// nothing survives the process, and the fixed path lets seeds name host files by absolute path.
/// Otherwise (no privilege) it is a fresh `mkdtemp` dir under `$TMPDIR`.
public enum Scratch {
    /// Where the tmpfs is mounted (inside the process's own mount namespace).
    public static let fixedRoot = "/tmp/layerkit-fuzz"
    /// The tmpfs size: big enough for the largest layer an input can decompress to before the
    /// file system says ENOSPC, small enough for two fuzzers on a shared machine.
    static let tmpfsSize = "768m"

    nonisolated(unsafe) private static var rootPath: String?

    /// The scratch dir (set up on first use).
    public static var root: String {
        if let rootPath { return rootPath }
        let path = setUp()
        rootPath = path
        return path
    }

    /// `ROOT/run`: empty at the start of every input.
    public static var run: String { root + "/run" }
    /// `ROOT/host`: files that stand for the host's.
    public static var host: String { root + "/host" }

    /// Sets up the scratch dir; call from `LLVMFuzzerInitialize`, before any thread is started.
    @discardableResult
    public static func setUp() -> String {
        if let rootPath { return rootPath }
        var path: String
        if geteuid() == 0, privateTmpfs() {
            path = fixedRoot
        } else {
            let base = (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
            var template = Array("\(base)/layerkit-fuzz-XXXXXX".utf8CString)
            guard mkdtemp(&template) != nil else { Invariant.fail("cannot create a scratch dir: \(String(cString: strerror(errno)))") }
            path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            Invariant.printError("fuzz: no private tmpfs (not root, or no mount namespace): scratch dir \(path)")
            rootPath = path
            atexit { if let dir = Scratch.rootPath { TreeRemover.remove(dir) } }
        }
        rootPath = path
        mkdir(path + "/host", 0o755)
        HostFiles.write(into: path + "/host")
        return path
    }

    /// A mount namespace of our own, `/` private in it, and a tmpfs at `fixedRoot`.
    private static func privateTmpfs() -> Bool {
        guard fuzz_private_mount_namespace() == 0 else { return false }
        mkdir(fixedRoot, 0o755)
        return fuzz_mount_tmpfs(fixedRoot, "size=\(tmpfsSize),mode=0755") == 0
    }

    /// Empties `run/` (made if missing) for the next input.
    public static func freshRun() -> String {
        let dir = run
        TreeRemover.remove(dir)
        guard mkdir(dir, 0o755) == 0 else { Invariant.fail("cannot create \(dir): \(String(cString: strerror(errno)))") }
        return dir
    }

    /// Writes `bytes` to `path` (a new file).
    public static func write(_ bytes: UnsafeRawBufferPointer, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK, 0o644)
        guard fd >= 0 else { Invariant.fail("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            guard n > 0 else { Invariant.fail("cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    public static func write(_ bytes: [UInt8], to path: String) {
        bytes.withUnsafeBytes { write($0, to: path) }
    }
}

/// Files in `host/` that an input must never reach.
public enum HostFiles {
    /// A valid layer (a tar holding `LAYERKIT-HOST-SECRET`): were it read through a symlink of an
    /// archive, an import would succeed. Its digest is in the dictionaries and seeds, its bytes
    /// nowhere in the corpus, so an input can only get them by reading this file.
    public static let secretLayerName = "secret-layer.tar"
    /// A file whose digest appears nowhere: an error that prints it has hashed a host file.
    public static let oracleName = "oracle"

    public static var secretLayer: [UInt8] {
        var tar = TarWriter()
        tar.file("LAYERKIT-HOST-SECRET", Array("this file is on the host and must never be imported\n".utf8))
        return tar.finish()
    }

    public static var oracle: [UInt8] {
        Array("LayerKit fuzz oracle: a host file no input may hash (\(String(repeating: "x", count: 64)))\n".utf8)
    }

    public static let secretLayerDigest = Digest.sha256(of: secretLayer)
    public static let oracleDigest = Digest.sha256(of: oracle)

    static func write(into dir: String) {
        Scratch.write(secretLayer, to: dir + "/" + secretLayerName)
        Scratch.write(oracle, to: dir + "/" + oracleName)
        mkdir(dir + "/etc", 0o755)
        Scratch.write(Array("root:x:0:0:root:/root:/bin/sh\n".utf8), to: dir + "/etc/passwd")
    }
}
