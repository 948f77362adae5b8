import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A mounted container, and what a runtime needs to use it.
public struct ContainerMount: Sendable, Codable, Equatable {
    /// The container record as it is now.
    public var container: StoredContainer
    /// Where the root filesystem is mounted.
    public var mountpoint: String
    /// `.overlay` or `.fuse`.
    public var driver: MountDriver
    /// How it was mounted.
    public var method: MountMethod
    /// The same mount as a spec, for a runtime that mounts by itself (kernel overlayfs).
    public var spec: MountSpec
    /// Why the first driver tried was not used (`--driver auto`), if it was not.
    public var fallbackReason: String?
}

/// A container found recorded as mounted whose mount is gone (the mounting process crashed, its
/// mount namespace ended, the machine rebooted, or someone unmounted it by hand).
public struct StaleMount: Sendable, Codable, Equatable, CustomStringConvertible {
    public var container: String
    public var mountpoint: String
    public var description: String { "container \(container): its mount at \(mountpoint) is gone; the record now says unmounted" }
}

/// Containers: create, mount, unmount, remove.
extension LayerStore {
    /// `ROOT/containers/<id>/upper`, `work`, `merged`.
    public func upperDir(of id: String) -> String { paths.containerDir(id) + "/upper" }
    public func workDir(of id: String) -> String { paths.containerDir(id) + "/work" }
    public func mergedDir(of id: String) -> String { paths.containerDir(id) + "/merged" }

    /// Bytes on disk of a container's upper dir (its changes); 0 for a read-only container.
    public func changesSize(of id: String) throws(StoreError) -> Int64 {
        let upper = upperDir(of: id)
        guard access(upper, F_OK) == 0 else { return 0 }
        return try DiskUsage.of(upper)
    }

    /// The container with this ID, or the one mounted at this path; nil if none.
    public func container(_ idOrMountpoint: String) throws(StoreError) -> StoredContainer? {
        if let found = try database({ db throws(DatabaseError) in
            try db.query("SELECT \(Self.containerColumns) FROM containers WHERE id = ?", [idOrMountpoint], Self.decodeContainer).first
        }) { return found }
        let resolved = MountTable.resolve(idOrMountpoint)
        return try database { db throws(DatabaseError) in
            try db.query("SELECT \(Self.containerColumns) FROM containers WHERE mountpoint = ? OR mountpoint = ?",
                         [idOrMountpoint, resolved], Self.decodeContainer).first
        }
    }

    /// Resolves what a container is made from: an image name, or a layer's chainID (`sha256:…`,
    /// the hex digits, or a unique prefix of at least 12 of them).
    public func resolveBase(_ reference: String) throws(StoreError) -> (image: String?, chainID: Digest?) {
        if let image = try image(named: reference) { return (image.name, image.topChainID) }
        let hex = reference.hasPrefix("sha256:") ? String(reference.dropFirst(7)) : reference
        if hex.count >= 12, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
            let matches = try layers().filter { $0.chainID.hex.hasPrefix(hex) }
            if matches.count == 1 { return (nil, matches[0].chainID) }
            if matches.count > 1 { throw StoreError(.invalidArgument, "\(reference.debugDescription) matches \(matches.count) layers: give more digits") }
        }
        throw StoreError(.notFound, "no image or layer \(reference.debugDescription) in the store at \(root)")
    }

    /// Checks a container ID: 1–128 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
    public static func validateContainerID(_ id: String) throws(StoreError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        guard let first = id.first, first.isLetter || first.isNumber, id.count <= 128, id.allSatisfy(allowed.contains) else {
            throw StoreError(.invalidArgument, "container name \(id.debugDescription): use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit")
        }
    }

    /// Creates a container on `base` (an image name or chainID): its record and its dirs
    /// (`upper/` and `work/` unless read-only, `merged/`). Nothing is mounted yet.
    public func createContainer(id: String? = nil, base reference: String, readOnly: Bool = false,
                                volatile: Bool = false, driver: MountDriver = .auto) throws(StoreError) -> StoredContainer {
        let id = id ?? Self.randomID()
        try Self.validateContainerID(id)
        return try withStoreLock(.shared) { () throws(StoreError) -> StoredContainer in
            try createContainerLocked(id: id, base: reference, readOnly: readOnly, volatile: volatile, driver: driver)
        }
    }

    private func createContainerLocked(id: String, base reference: String, readOnly: Bool,
                                       volatile: Bool, driver: MountDriver) throws(StoreError) -> StoredContainer {
        let (image, chainID) = try resolveBase(reference)
        guard try container(id) == nil else { throw StoreError(.invalidArgument, "a container named \(id.debugDescription) exists") }

        // Dirs first, record second: a crash in between leaves a dir without a record, which
        // cleanup removes; never a record without its dirs.
        let dir = paths.containerDir(id)
        if access(dir, F_OK) == 0 { try Self.removeTree(dir) }
        var made = false
        defer { if !made { try? Self.removeTree(dir) } }
        try Self.makeDir(dir, 0o700)
        if !readOnly {
            try Self.makeDir(upperDir(of: id), 0o755)
            try Self.makeDir(workDir(of: id), 0o700)
            // The upper dir is the merged root: it starts as the image's root looks (owner, mode,
            // times), so mounting changes nothing about `/` until the container does.
            if let top = chainID { Self.copyRootMetadata(from: paths.diffDir(top), to: upperDir(of: id)) }
        }
        try Self.makeDir(mergedDir(of: id), 0o755)
        if chainID == nil { try Self.makeDir(dir + "/empty", 0o755) }
        try execute("""
            INSERT INTO containers (id, image, chain_id, driver, mountpoint, state, created, read_only, volatile)
            VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)
            """, [id, image, chainID, driver, ContainerState.created, Self.now(), readOnly ? 1 : 0, volatile ? 1 : 0])
        made = true
        guard let record = try container(id) else { throw StoreError(.notFound, "container \(id) vanished after it was recorded") }
        return record
    }

    /// The overlay a container's rootfs is: its chain's diff dirs top first, its upper and work
    /// dirs, with the `l/` short names for the mount(2) fallback.
    public func mountRequest(for container: StoredContainer) throws(StoreError) -> OverlayMountRequest {
        var lowers = [String](), shorts = [String]()
        if let top = container.chainID {
            let byChain = Dictionary(uniqueKeysWithValues: try layers().map { ($0.chainID, $0) })
            for id in try Self.chain(of: top, in: byChain, path: paths.database).reversed() {
                lowers.append(paths.diffDir(id))
                shorts.append("l/" + byChain[id]!.link)
            }
        } else {
            lowers = [paths.containerDir(container.id) + "/empty"]
            shorts = ["containers/\(container.id)/empty"]
        }
        return OverlayMountRequest(lowerDirs: lowers, upperDir: container.readOnly ? nil : upperDir(of: container.id),
                                   workDir: container.readOnly ? nil : workDir(of: container.id), readOnly: container.readOnly,
                                   volatile: container.volatile, userXattr: overlayNamespace == .user,
                                   shortLowerDirs: shorts, shortBase: root)
    }

    /// Mounts a container's rootfs at `target` (default `ROOT/containers/<id>/merged`).
    ///
    /// `driver` `.auto` tries kernel overlayfs and falls back to `userspace` (the FUSE union) when
    /// the kernel refuses for want of privilege or support. The record says `mounting` during the
    /// mount call and `mounted` after, with the mountpoint and driver.
    public func mountContainer(_ id: String, at target: String? = nil, driver: MountDriver = .auto,
                               userspace: (any UserspaceUnionMounter)? = nil) throws(StoreError) -> ContainerMount {
        _ = try reconcileMounts()
        guard var record = try container(id) else { throw StoreError(.notFound, "no container \(id.debugDescription)") }
        if record.isMounted, let at = record.mountpoint {
            throw StoreError(.invalidArgument, path: at, "container \(record.id) is already mounted here")
        }
        if let target {
            do throws(MountError) { try OverlayMounter.checkTarget(target) } catch { throw StoreError(error) }
        }
        let mountpoint = MountTable.resolve(target ?? mergedDir(of: record.id))
        var st = stat()
        guard stat(mountpoint, &st) == 0, FileSystem.isDirectory(st) else {
            throw StoreError(.notFound, path: mountpoint, "the mount target must be an existing directory")
        }
        if let other = try container(mountpoint), other.id != record.id, other.isMounted {
            throw StoreError(.invalidArgument, path: mountpoint, "container \(other.id) is mounted here")
        }
        if overlayNamespace == .trusted && !Self.inInitialUserNamespace {
            // Neither overlayfs nor the FUSE union could read this store's opaque-dir markers here.
            throw StoreError(.incompatible, path: root,
                             "this store's layers mark opaque dirs with trusted.* xattrs, which cannot be read inside a user namespace: use a store created in the namespace (--root)")
        }
        let request = try mountRequest(for: record)
        try execute("UPDATE containers SET state = ?, mountpoint = ? WHERE id = ?", [ContainerState.mounting, mountpoint, record.id])
        var done = false
        defer {
            if !done { try? execute("UPDATE containers SET state = ?, mountpoint = NULL WHERE id = ?", [ContainerState.created, record.id]) }
        }
        FaultInjection.point("mount.recorded")

        let wanted = driver == .auto ? record.driver : driver
        let outcome: MountOutcome
        do throws(MountError) {
            outcome = try UnionMounter.mount(request, at: mountpoint, driver: wanted, userspace: userspace, options: configuration.mountOptions)
        } catch {
            throw StoreError(error)
        }
        FaultInjection.point("mount.mounted")
        try execute("UPDATE containers SET state = ?, mountpoint = ?, driver = ?, daemon_pid = ? WHERE id = ?",
                    [ContainerState.mounted, mountpoint, outcome.driver, outcome.daemonPID.map { Int64($0) }, record.id])
        done = true
        record = try container(record.id) ?? record
        return ContainerMount(container: record, mountpoint: mountpoint, driver: outcome.driver, method: outcome.method,
                              spec: request.spec, fallbackReason: outcome.fallbackReason)
    }

    /// Unmounts a container (by ID or mountpoint). A record whose mount is already gone is
    /// corrected rather than refused.
    @discardableResult
    public func unmountContainer(_ idOrMountpoint: String, detach: Bool = false) throws(StoreError) -> StoredContainer {
        guard let record = try container(idOrMountpoint) else {
            throw StoreError(.notFound, "no container \(idOrMountpoint.debugDescription) (and no container is mounted there)")
        }
        guard record.isMounted, let mountpoint = record.mountpoint else {
            throw StoreError(.invalidArgument, "container \(record.id) is not mounted")
        }
        if Self.isMounted(record, in: MountTable.current(), paths: self) {
            do throws(MountError) { try OverlayMounter.unmount(mountpoint, detach: detach) } catch { throw StoreError(error) }
        }
        if record.driver == .fuse, let pid = record.daemonPID { Self.reapDaemon(pid) }
        try execute("UPDATE containers SET state = ?, mountpoint = NULL, daemon_pid = NULL WHERE id = ?", [ContainerState.unmounted, record.id])
        return try container(record.id) ?? record
    }

    /// Removes containers: their records, then their dirs (upper dir included: changes not
    /// committed are lost). A mounted container is refused unless `force`, which unmounts it
    /// first. All names are checked before anything is removed.
    public func removeContainers(_ ids: [String], force: Bool = false) throws(StoreError) {
        _ = try reconcileMounts()
        var records = [StoredContainer]()
        for id in ids {
            guard let record = try container(id) else { throw StoreError(.notFound, "no container \(id.debugDescription)") }
            if record.isMounted && !force {
                throw StoreError(.invalidArgument, "container \(record.id) is mounted at \(record.mountpoint ?? "?"): umount it first (or --force)")
            }
            records.append(record)
        }
        for record in records {
            if record.isMounted { try unmountContainer(record.id, detach: true) }
            try execute("DELETE FROM containers WHERE id = ?", [record.id])
            FaultInjection.point("container.deleted")
            try Self.removeTree(paths.containerDir(record.id))
        }
    }

    /// Writes out what a mounted container has cached (the FUSE union keeps written data in the
    /// kernel's writeback cache until then), so its upper dir holds every change made so far.
    /// Nothing to do for an unmounted container.
    public func flushChanges(of id: String) throws(StoreError) {
        guard let record = try container(id), record.isMounted, let mountpoint = record.mountpoint,
              Self.isMounted(record, in: MountTable.current(), paths: self) else { return }
        let fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: mountpoint, "cannot open the container's mount to sync it") }
        defer { close(fd) }
        guard lk_syncfs(fd) == 0 else { throw .lastErrno(path: mountpoint, "cannot sync the container's mount") }
    }

    /// Finds containers recorded as mounted (or mounting) whose mount is not in this mount
    /// namespace's table, marks them unmounted and returns them. A FUSE mount whose daemon died is
    /// detached and counted too.
    public func reconcileMounts() throws(StoreError) -> [StaleMount] {
        let mounted = try containers().filter(\.isMounted)
        guard !mounted.isEmpty else { return [] }
        let table = MountTable.current()
        var stale = [StaleMount]()
        for record in mounted {
            var alive = Self.isMounted(record, in: table, paths: self)
            if alive, record.driver == .fuse, let mountpoint = record.mountpoint, !Self.fuseResponds(mountpoint) {
                _ = try? OverlayMounter.unmount(mountpoint, detach: true)
                alive = false
            }
            if alive {
                if record.state == ContainerState.mounting {
                    try execute("UPDATE containers SET state = ? WHERE id = ?", [ContainerState.mounted, record.id])
                }
                continue
            }
            try execute("UPDATE containers SET state = ?, mountpoint = NULL, daemon_pid = NULL WHERE id = ?",
                        [ContainerState.unmounted, record.id])
            stale.append(StaleMount(container: record.id, mountpoint: record.mountpoint ?? "?"))
        }
        return stale
    }

    // MARK: Internals

    /// Whether the table has this container's mount at its mountpoint.
    static func isMounted(_ record: StoredContainer, in table: MountTable, paths store: LayerStore) -> Bool {
        guard let mountpoint = record.mountpoint, let entry = table.entries.last(where: { $0.mountPoint == mountpoint }) else { return false }
        switch record.driver {
        case .fuse:
            return entry.fileSystemType.hasPrefix("fuse")
        case .overlay, .auto:
            if record.readOnly && entry.fileSystemType != "overlay" {
                // A single read-only layer is a bind mount of its diff dir.
                return entry.root.hasSuffix("/diff")
            }
            guard entry.fileSystemType == "overlay" else { return false }
            if record.readOnly { return true }
            return entry.superOption("upperdir") == store.upperDir(of: record.id)
        }
    }

    /// True unless the FUSE daemon behind the mount is gone (stat answers ENOTCONN).
    static func fuseResponds(_ mountpoint: String) -> Bool {
        var st = stat()
        return stat(mountpoint, &st) == 0 || errno != ENOTCONN
    }

    /// Waits briefly (up to 1 s) for a FUSE daemon to exit after its mount went away. A daemon
    /// that has exited but not been reaped yet (a zombie of init, as detached daemons become)
    /// counts as gone.
    static func reapDaemon(_ pid: Int32) {
        guard pid != getpid() else { return }   // served in this process: it ended with the unmount
        for _ in 0..<100 {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { return }
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return }
            // `pid (comm) S ...`: the state is the first field after the command name.
            let state = stat[stat.index(after: close)...].split(separator: " ").first
            if state == "Z" || state == "X" { return }
            usleep(10_000)
        }
    }

    /// Gives `target` the owner, mode and times of `source` (both dirs).
    static func copyRootMetadata(from source: String, to target: String) {
        var st = stat()
        guard lstat(source, &st) == 0 else { return }
        if geteuid() == 0 { _ = lchown(target, st.st_uid, st.st_gid) }
        _ = chmod(target, st.st_mode & 0o7777)
        var times = [st.st_atim, st.st_mtim]
        _ = utimensat(AT_FDCWD, target, &times, AT_SYMLINK_NOFOLLOW)
    }

    static func randomID() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<6).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    static func makeDir(_ path: String, _ mode: mode_t) throws(StoreError) {
        guard mkdir(path, mode) == 0, chmod(path, mode) == 0 else { throw .lastErrno(path: path, "cannot create directory") }
    }
}
