import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Mounts overlays (and single read-only layers) with the kernel, and unmounts them.
///
/// The new mount API comes first: `fsopen("overlay")`, one `fsconfig(…, "lowerdir+", dir)` per
/// layer (Linux 6.8+; no length limit, so the kernel's full 500-layer stack fits), `fsmount`,
/// `move_mount`. Where the kernel lacks `lowerdir+`, mount(2) takes the options as one page of
/// mount data; the request's short lower-dir spellings (the store's `l/` links) are used, relative
/// to their base dir, when the full paths would not fit.
///
/// Needs `CAP_SYS_ADMIN` in the mount namespace's user namespace (root, or a user namespace with
/// `userXattr`).
public enum OverlayMounter {
    /// Choices about how to mount.
    public struct Options: Sendable, Equatable {
        /// Use mount(2) even where the new mount API works (to exercise the fallback).
        public var forceMountSyscall: Bool
        public init(forceMountSyscall: Bool = false) { self.forceMountSyscall = forceMountSyscall }
    }

    /// Mounts `request` on `target` (an existing dir) and returns how.
    @discardableResult
    public static func mount(_ request: OverlayMountRequest, at target: String, options: Options = .init()) throws(MountError) -> MountMethod {
        try request.validate()
        try checkTarget(target)
        if request.isSingleReadOnlyLayer {
            try bindReadOnly(request.lowerDirs[0], at: target)
            return .bind
        }
        if !options.forceMountSyscall, try mountWithFileSystemContext(request, at: target) { return .mountAPI }
        try mountWithMountData(request, at: target)
        return .mountSyscall
    }

    /// A mount target must be a directory named as itself: a symlink there would put the mount
    /// wherever it points.
    static func checkTarget(_ target: String) throws(MountError) {
        var st = stat()
        guard lstat(target, &st) == 0 else {
            if errno == ENOENT { throw MountError(path: target, "the mount target must be an existing directory") }
            throw MountError.lastErrno(path: target, "cannot use as a mount point")
        }
        guard !FileSystem.isSymlink(st) else {
            throw MountError(path: target, "the mount point is a symlink: give the directory it should be (nothing is mounted through a link)")
        }
        guard FileSystem.isDirectory(st) else { throw MountError(path: target, "the mount target must be an existing directory") }
    }

    /// Unmounts `target`. With `detach`, a busy mount is detached now and cleaned up by the
    /// kernel when its last user goes (MNT_DETACH).
    public static func unmount(_ target: String, detach: Bool = false) throws(MountError) {
        let flags = Int32(LK_UMOUNT_NOFOLLOW) | (detach ? Int32(LK_MNT_DETACH) : 0)
        guard umount2(target, flags) == 0 else {
            let code = errno
            if code == EBUSY {
                throw MountError(path: target, "cannot unmount: the mount is busy (a process has a file or its cwd in it; --detach unmounts lazily)",
                                 errno: Errno(rawValue: code))
            }
            // An unprivileged user's FUSE mount is unmounted by the setuid helper, as fusermount3 -u.
            if code == EPERM, let entry = MountTable.current().mount(at: target), entry.fileSystemType.hasPrefix("fuse"),
               let helper = [String](["/usr/bin/fusermount3", "/bin/fusermount3"]).first(where: { Glibc.access($0, X_OK) == 0 }) {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: helper)
                process.arguments = (detach ? ["-u", "-z"] : ["-u"]) + [entry.mountPoint]
                process.standardOutput = FileHandle.nullDevice
                let errors = Pipe()
                process.standardError = errors
                do { try process.run() } catch {
                    throw MountError(path: target, "cannot run \(helper): \(error)", errno: Errno(rawValue: code))
                }
                let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                guard process.terminationStatus == 0 else {
                    throw MountError(path: target, "\(helper) -u failed: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
                }
                return
            }
            throw MountError(path: target, "cannot unmount", errno: Errno(rawValue: code))
        }
    }

    // MARK: The new mount API

    /// Returns false when the kernel has no `lowerdir+` (before 6.8), having changed nothing.
    private static func mountWithFileSystemContext(_ request: OverlayMountRequest, at target: String) throws(MountError) -> Bool {
        let fsfd = lk_fsopen("overlay", UInt32(LK_FSOPEN_CLOEXEC))
        guard fsfd >= 0 else {
            if errno == ENOSYS { return false }
            if errno == ENODEV { throw MountError(path: target, "the kernel has no overlay file system (modprobe overlay)", errno: Errno(rawValue: ENODEV)) }
            throw MountError.lastErrno(path: target, "fsopen(overlay)")
        }
        defer { close(fsfd) }

        func set(_ key: String, _ value: String?) throws(MountError) -> Bool {
            let rc = value.map { lk_fsconfig(fsfd, UInt32(LK_FSCONFIG_SET_STRING), key, $0, 0) }
                ?? lk_fsconfig(fsfd, UInt32(LK_FSCONFIG_SET_FLAG), key, nil, 0)
            if rc == 0 { return true }
            let code = errno
            let log = readLog(fsfd)
            throw MountError(path: value ?? target, "overlay option \(key) refused", errno: Errno(rawValue: code), kernelMessages: log)
        }

        // The first "lowerdir+" tells whether the kernel has it.
        if lk_fsconfig(fsfd, UInt32(LK_FSCONFIG_SET_STRING), "lowerdir+", request.lowerDirs[0], 0) != 0 {
            let code = errno
            let log = readLog(fsfd)
            if code == EINVAL && log.allSatisfy({ $0.contains("Unknown parameter") || $0.contains("lowerdir+") }) {
                return false
            }
            throw MountError(path: request.lowerDirs[0], "cannot use as a lower dir", errno: Errno(rawValue: code), kernelMessages: log)
        }
        for dir in request.lowerDirs.dropFirst() { _ = try set("lowerdir+", dir) }
        if let upper = request.upperDir, let work = request.workDir {
            _ = try set("upperdir", upper)
            _ = try set("workdir", work)
        }
        _ = try set("source", "overlay")
        _ = try set("index", "off")
        if !request.userXattr { _ = try set("redirect_dir", "off") }
        if request.volatile && request.upperDir != nil { _ = try set("volatile", nil) }
        if request.userXattr { _ = try set("userxattr", nil) }

        guard lk_fsconfig(fsfd, UInt32(LK_FSCONFIG_CMD_CREATE), nil, nil, 0) == 0 else {
            let code = errno
            let log = readLog(fsfd)
            throw MountError(path: target, "overlayfs refused the mount" + (log.isEmpty ? " (dmesg has the kernel's reason)" : ""),
                             errno: Errno(rawValue: code), kernelMessages: log)
        }
        let attributes = request.readOnly ? UInt32(LK_MOUNT_ATTR_RDONLY) : 0
        let mountFD = lk_fsmount(fsfd, UInt32(LK_FSMOUNT_CLOEXEC), attributes)
        guard mountFD >= 0 else { throw MountError.lastErrno(path: target, "fsmount", kernelMessages: readLog(fsfd)) }
        defer { close(mountFD) }
        guard lk_move_mount(mountFD, "", AT_FDCWD, target, UInt32(LK_MOVE_MOUNT_F_EMPTY_PATH)) == 0 else {
            throw MountError.lastErrno(path: target, "cannot attach the mount")
        }
        return true
    }

    /// The messages the kernel logged on a file system context (`e overlayfs: ...` lines).
    private static func readLog(_ fsfd: Int32) -> [String] {
        var lines = [String]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while lines.count < 16 {
            let n = buffer.withUnsafeMutableBytes { read(fsfd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            var text = String(decoding: buffer[..<n], as: UTF8.self)
            if text.count > 2, text.dropFirst().first == " " { text = String(text.dropFirst(2)) }
            lines.append(text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return lines
    }

    // MARK: mount(2)

    private static func mountWithMountData(_ request: OverlayMountRequest, at target: String) throws(MountError) {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let full = mountData(request, lowerDirs: request.lowerDirs)
        for dir in request.lowerDirs + [request.upperDir, request.workDir].compactMap({ $0 }) where dir.contains(",") {
            throw MountError(path: dir, "a path with a comma cannot be passed to mount(2) (this kernel has no lowerdir+)")
        }
        let flags = UInt(request.readOnly ? LK_MS_RDONLY : 0)
        if full.utf8.count < pageSize {
            guard Glibc.mount("overlay", target, "overlay", flags, full) == 0 else {
                throw MountError.lastErrno(path: target, "overlayfs refused the mount (dmesg has the kernel's reason)")
            }
            return
        }
        guard let short = request.shortLowerDirs, let base = request.shortBase else {
            throw MountError(path: target, "the mount options take \(full.utf8.count) bytes, over the \(pageSize)-byte limit of mount(2) (the new mount API's lowerdir+, Linux 6.8+, has no such limit)")
        }
        // Relative lower dirs resolve against the cwd of the mounting process: enter the base dir
        // for the call, then come back. The cwd is process-wide, so this is serialised.
        let data = mountData(request, lowerDirs: short)
        guard data.utf8.count < pageSize else {
            throw MountError(path: target, "\(request.lowerDirs.count) lower dirs need \(data.utf8.count) bytes of mount data even with short names, over the \(pageSize)-byte limit of mount(2) (the new mount API's lowerdir+, Linux 6.8+, has no such limit)")
        }
        cwdLock.lock()
        defer { cwdLock.unlock() }
        let saved = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard saved >= 0 else { throw MountError.lastErrno(path: ".", "cannot open the current directory") }
        defer { close(saved) }
        guard chdir(base) == 0 else { throw MountError.lastErrno(path: base, "cannot enter") }
        let rc = Glibc.mount("overlay", target, "overlay", flags, data)
        let code = errno
        _ = fchdir(saved)
        guard rc == 0 else {
            throw MountError(path: target, "overlayfs refused the mount (dmesg has the kernel's reason)", errno: Errno(rawValue: code))
        }
    }

    private static let cwdLock = NSLock()

    private static func mountData(_ request: OverlayMountRequest, lowerDirs: [String]) -> String {
        var options = ["lowerdir=" + lowerDirs.map(OverlayMountRequest.escapeLowerDir).joined(separator: ":")]
        if let upper = request.upperDir, let work = request.workDir {
            options += ["upperdir=" + upper, "workdir=" + work]
        }
        return (options + request.flagOptions).joined(separator: ",")
    }

    // MARK: Bind

    private static func bindReadOnly(_ source: String, at target: String) throws(MountError) {
        let treeFD = lk_open_tree(AT_FDCWD, source, UInt32(LK_OPEN_TREE_CLONE))
        if treeFD >= 0 {
            defer { close(treeFD) }
            guard lk_mount_setattr_fd(treeFD, UInt64(LK_MOUNT_ATTR_RDONLY)) == 0 else {
                throw MountError.lastErrno(path: source, "cannot make the bind mount read-only")
            }
            guard lk_move_mount(treeFD, "", AT_FDCWD, target, UInt32(LK_MOVE_MOUNT_F_EMPTY_PATH)) == 0 else {
                throw MountError.lastErrno(path: target, "cannot attach the bind mount")
            }
            return
        }
        guard errno == ENOSYS else { throw MountError.lastErrno(path: source, "cannot clone for a bind mount") }
        guard Glibc.mount(source, target, nil, UInt(LK_MS_BIND), nil) == 0 else {
            throw MountError.lastErrno(path: target, "cannot bind mount \(source)")
        }
        guard Glibc.mount("none", target, nil, UInt(LK_MS_BIND | LK_MS_REMOUNT | LK_MS_RDONLY), nil) == 0 else {
            let error = MountError.lastErrno(path: target, "cannot make the bind mount read-only")
            _ = umount2(target, Int32(LK_MNT_DETACH))
            throw error
        }
    }
}
