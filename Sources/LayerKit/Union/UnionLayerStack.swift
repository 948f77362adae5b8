import CLayerSys
#if canImport(Glibc)
import Glibc
#endif

/// How the union records deletions and opaque dirs in its upper dir.
public enum UnionWhiteoutForm: Sendable, Equatable {
    /// Kernel overlayfs's own format: a whiteout is a char device 0/0, an opaque dir carries
    /// `<namespace>.overlay.opaque=y`. Used wherever a 0/0 device can be made (root).
    case overlay(OverlayXattrNamespace)
    /// The aufs/OCI format: a whiteout is an empty file `.wh.NAME`, an opaque dir holds
    /// `.wh..wh..opq`. Used where mknod of a 0/0 device is refused.
    case aufs
}

/// The backing directories of a union: index 0 is the upper (writable) dir, 1... are the lower
/// dirs, top first. Lowers are read in overlay format (whiteouts as 0/0 char devices, opaque
/// xattrs in the `trusted.` or `user.` namespace); the upper in the form it was opened with.
final class UnionLayerStack: @unchecked Sendable {
    let roots: [[UInt8]]
    let fds: [Int32]
    let workFD: Int32
    let workRoot: [UInt8]
    let form: UnionWhiteoutForm

    static let upper = 0
    /// The prefix of the union's temporary names in the work dir.
    static let tempPrefix = "#layerkit-union-"

    init(lowers: [String], upper: String, work: String, form requestedForm: UnionWhiteoutForm?) throws(UnionError) {
        var fds: [Int32] = []
        func openDir(_ path: String) throws(UnionError) -> Int32 {
            let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if fd < 0 {
                let e = UnionError(errno, "open layer", path)
                for f in fds { close(f) }
                throw e
            }
            return fd
        }
        for dir in [upper] + lowers { fds.append(try openDir(dir)) }
        let workFD = try openDir(work)
        var us = stat(), ws = stat()
        fstat(fds[0], &us)
        fstat(workFD, &ws)
        guard us.st_dev == ws.st_dev else {
            for f in fds + [workFD] { close(f) }
            throw UnionError(EXDEV, "work dir must be on the upper dir's file system", work)
        }
        self.fds = fds
        self.workFD = workFD
        self.roots = ([upper] + lowers).map { Self.realRoot($0) }
        self.workRoot = Self.realRoot(work)
        Self.removeLeftovers(workFD)
        self.form = requestedForm ?? Self.probeForm(workFD, workRoot: Self.realRoot(work))
    }

    deinit {
        for fd in fds { close(fd) }
        close(workFD)
    }

    var lowerCount: Int { fds.count - 1 }

    private static func realRoot(_ path: String) -> [UInt8] {
        guard let p = realpath(path, nil) else { return Array(path.utf8) }
        defer { free(p) }
        return Array(String(cString: p).utf8)
    }

    /// Overlay form when a 0/0 device can be made in the work dir (root, or a user namespace on
    /// Linux 5.8+) and an opaque xattr set on a dir there: `trusted.` where allowed (root in the
    /// initial namespace), else `user.`; aufs form when not.
    private static func probeForm(_ workFD: Int32, workRoot: [UInt8]) -> UnionWhiteoutForm {
        let probe = Array((tempPrefix + "probe").utf8)
        unlinkat(workFD, String(decoding: probe, as: UTF8.self), 0)
        guard withCString(probe, { mknodat(workFD, $0, LayerFormat.whiteoutDeviceMode, 0) }) == 0 else { return .aufs }
        unlinkat(workFD, String(decoding: probe, as: UTF8.self), 0)
        guard withCString(probe, { mkdirat(workFD, $0, 0o700) }) == 0 else { return .aufs }
        defer { unlinkat(workFD, String(decoding: probe, as: UTF8.self), AT_REMOVEDIR) }
        let candidates: [OverlayXattrNamespace] = geteuid() == 0 ? [.trusted, .user] : [.user]
        for ns in candidates where (try? Xattrs.set(atPath: FileSystem.absolute(workRoot, probe), ns.opaque, OverlayXattrNamespace.opaqueValue)) != nil {
            return .overlay(ns)
        }
        return .aufs
    }

    /// Temporary entries a crashed copy-up left in the work dir.
    private static func removeLeftovers(_ workFD: Int32) {
        guard let names = try? FileSystem.names(of: workFD) else { return }
        for name in names where name.starts(with: tempPrefix.utf8) {
            try? FileSystem.removeTree(workFD, name)
        }
    }

    // MARK: Markers

    /// Whether `path` in `layer` is hidden by a whiteout: a 0/0 device there (any layer), or an
    /// aufs `.wh.NAME` next to it (the upper, in aufs form).
    func isAufsWhitedOut(_ layer: Int, parent: [UInt8], name: [UInt8]) -> Bool {
        guard layer == Self.upper, form == .aufs else { return false }
        return FileSystem.exists(fds[layer], FileSystem.join(parent, LayerFormat.whiteoutName(for: name)))
    }

    /// Whether the dir at `path` in `layer` is opaque (hides the layers below it).
    func isOpaque(_ layer: Int, _ path: [UInt8]) -> Bool {
        if layer == Self.upper, form == .aufs {
            return FileSystem.exists(fds[layer], FileSystem.join(path, LayerFormat.opaqueMarker))
        }
        let abs = FileSystem.absolute(roots[layer], path)
        return OverlayXattrNamespace.allCases.contains { Xattrs.value(atPath: abs, $0.opaque) == OverlayXattrNamespace.opaqueValue }
    }

    /// Whether a name seen in a listing of `layer` is a marker rather than an entry, and what it hides.
    enum ListedName { case entry, whiteout([UInt8]), marker }

    func classify(_ layer: Int, dir: [UInt8], name: [UInt8], type: UInt8) -> ListedName {
        if layer == Self.upper, form == .aufs {
            switch LayerFormat.marker(name) {
            case .none: break
            case .whiteout(let hidden): return .whiteout(hidden)
            case .opaque, .aufsMetadata, .invalidWhiteout: return .marker
            }
        }
        if type == UInt8(DT_CHR) || type == UInt8(DT_UNKNOWN) {
            if let st = FileSystem.lstat(fds[layer], FileSystem.join(dir, name)), LayerFormat.isWhiteoutDevice(st) {
                return .whiteout(name)
            }
        }
        return .entry
    }
}
