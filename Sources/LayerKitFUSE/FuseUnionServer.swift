import CFuse
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Why the FUSE session could not be set up.
public struct FuseServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Serves a `UnionFileSystem` over FUSE (libfuse3's low-level API, multithreaded). The mount
/// shows as `fuse.layerkit-union` in /proc/self/mountinfo.
///
/// ```swift
/// let server = try FuseUnionServer(union: union)
/// try server.mount(at: "/merged")
/// server.serve()        // until `umount /merged` or SIGTERM/SIGINT/SIGHUP
/// ```
public final class FuseUnionServer: @unchecked Sendable {
    /// Mount and session settings.
    public struct Options: Sendable {
        /// How long the kernel may cache names and attributes (seconds). The union is the only
        /// writer of its upper and lowers are read-only, so this can be long.
        public var cacheTimeout: Double = 86_400
        /// Worker threads of the loop: one per CPU (at least two), all kept waiting. The kernel
        /// hands requests to waiting workers in turn, so every extra worker costs a sequential
        /// caller thread switches: on 2 cores an untar through the mount took 1.4 s with one
        /// worker, 1.7 s with two, 2.6 s with four and 2.7 s with sixteen (a 1 GiB read: 0.30 s
        /// with one, 0.40 s with two); letting libfuse start and end workers with the load (16 at
        /// most, 2 idle) was slower still (2.8-3.3 s). Two or more keep one caller's fsync or
        /// cold read from stalling every other caller; 1 runs libfuse's single-threaded loop.
        public var maxThreads: UInt32 = UInt32(max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        /// Let every user in (root only): `allow_other` with `default_permissions`, so that the
        /// kernel checks permissions against the attributes.
        public var allowOther: Bool = geteuid() == 0
        /// The mount's source field in mountinfo.
        public var fsName: String = "layerkit-union"
        /// Let the kernel cache writes (FUSE_CAP_WRITEBACK_CACHE) and send them in large blocks.
        /// A write error of the upper (ENOSPC) then reaches the writer at close() or fsync()
        /// instead of write(), as with any write-back cache; it is never dropped.
        public var writebackCache: Bool = true
        public init() {}
    }

    /// The subtype the mounts show in mountinfo (`fuse.layerkit-union`).
    public static let subtype = "layerkit-union"

    let union: UnionFileSystem
    let options: Options
    /// Set once the kernel agreed to writeback caching (in the INIT reply, before any request).
    nonisolated(unsafe) var writebackEnabled = false
    private var session: OpaquePointer?
    private var mounted = false
    private var signalsInstalled = false

    public init(union: UnionFileSystem, options: Options = Options()) {
        self.union = union
        self.options = options
    }

    deinit {
        if let session {
            if signalsInstalled { fuse_remove_signal_handlers(session) }
            if mounted { fuse_session_unmount(session) }
            fuse_session_destroy(session)
        }
    }

    /// Creates the session and mounts it on `target`; the mount is live when this returns
    /// (requests wait in the kernel until `serve` reads them). With `installSignalHandlers`
    /// (a daemon), SIGTERM, SIGINT and SIGHUP end `serve` and unmount; a server inside another
    /// program leaves that program's signals alone.
    public func mount(at target: String, installSignalHandlers: Bool = true) throws(FuseServerError) {
        var mountOptions = ["fsname=\(options.fsName)", "subtype=\(Self.subtype)", "default_permissions"]
        if options.allowOther { mountOptions.append("allow_other") }
        let argv = ["layertool-fuse", "-o", mountOptions.joined(separator: ",")]
        let cArgs = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: argv.count + 1)
        for (i, a) in argv.enumerated() { cArgs[i] = strdup(a) }
        cArgs[argv.count] = nil
        var args = fuse_args(argc: Int32(argv.count), argv: cArgs, allocated: 0)
        var ops = FuseOperations.table()
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        guard let se = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata) else {
            throw FuseServerError("cannot create the FUSE session (bad options?)")
        }
        session = se
        // Before the mount goes live (and the caller is told so): a SIGTERM that follows at once
        // must end the loop cleanly, not kill the process with the mount left behind.
        if installSignalHandlers { signalsInstalled = fuse_set_signal_handlers(se) == 0 }
        guard fuse_session_mount(se, target) == 0 else {
            throw FuseServerError("cannot mount FUSE on \(target) (is /dev/fuse there, and are we allowed to mount?)")
        }
        mounted = true
    }

    /// Serves requests until the file system is unmounted (`umount`, `fusermount3 -u`) or a
    /// SIGTERM, SIGINT or SIGHUP arrives; then unmounts (if still mounted). Returns 0 after an
    /// unmount, the signal number after a signal, or a negative errno on failure.
    @discardableResult
    public func serve() -> Int32 {
        guard let se = session else { return -EINVAL }
        let rc = options.maxThreads <= 1 ? fuse_session_loop(se) : lkf_session_loop_mt(se, options.maxThreads, options.maxThreads)
        if signalsInstalled { fuse_remove_signal_handlers(se); signalsInstalled = false }
        unmount()
        return rc
    }

    /// The flags to open a backing file with. O_DIRECT stays with the kernel (the backing fd gets
    /// the kernel's buffers, not the caller's aligned ones). With writeback caching the kernel
    /// may read pages of a file opened write-only and computes append offsets itself:
    /// write-only becomes read-write and O_APPEND is dropped.
    func backingFlags(_ flags: Int32) -> Int32 {
        var f = flags & ~Int32(0o40000)   // O_DIRECT (not imported: it needs _GNU_SOURCE)
        guard writebackEnabled else { return f }
        if f & O_ACCMODE == O_WRONLY { f = (f & ~O_ACCMODE) | O_RDWR }
        return f & ~O_APPEND
    }

    /// Unmounts (lazily, as libfuse does) if still mounted.
    public func unmount() {
        if let session, mounted {
            fuse_session_unmount(session)
            mounted = false
        }
    }
}
