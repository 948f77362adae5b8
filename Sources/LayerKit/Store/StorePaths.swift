import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where everything lives in a store root, on the model of Docker's overlay2 driver:
///
/// ```
/// ROOT/metadata.db                  the records (SQLite, WAL)
/// ROOT/layers/<chainID hex>/diff/   a layer in overlayfs format (whiteouts 0/0, opaque xattrs)
/// ROOT/layers/<chainID hex>/link    its short name
/// ROOT/l/<short> -> ../layers/<chainID hex>/diff
///                                   26-character names, so mount data listing many lower dirs stays short
/// ROOT/staging/<random>/            a layer being unpacked (removed when the store is next opened idle)
/// ROOT/locks/store.lock, <chainID hex>.lock
/// ROOT/blobs/sha256/<hex>           content store (for blobs written by commit)
/// ROOT/containers/<id>/{upper,work,merged}
/// ```
public struct StorePaths: Sendable, Equatable {
    /// The store root.
    public let root: String

    public init(root: String) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
    }

    public var database: String { root + "/metadata.db" }
    public var layersDir: String { root + "/layers" }
    public var linksDir: String { root + "/l" }
    public var stagingDir: String { root + "/staging" }
    public var locksDir: String { root + "/locks" }
    public var blobsDir: String { root + "/blobs/sha256" }
    public var containersDir: String { root + "/containers" }
    /// The dirs the store makes below its root.
    var ownDirectories: [String] { [layersDir, linksDir, stagingDir, locksDir, root + "/blobs", blobsDir, containersDir, snapshotsDir] }
    /// The lock that imports share and garbage collection and cleanup take alone.
    public var storeLock: String { locksDir + "/store.lock" }

    /// `ROOT/layers/<hex>`.
    public func layerDir(_ chainID: Digest) -> String { layersDir + "/" + chainID.hex }
    /// `ROOT/layers/<hex>/diff`: the layer's contents, an overlay lower dir.
    public func diffDir(_ chainID: Digest) -> String { layerDir(chainID) + "/diff" }
    /// `ROOT/layers/<hex>/link`: the file holding the layer's short name.
    public func linkFile(_ chainID: Digest) -> String { layerDir(chainID) + "/link" }
    /// `ROOT/l/<short>`: the symlink to the diff dir.
    public func shortLink(_ short: String) -> String { linksDir + "/" + short }
    /// The lock held while the layer is checked for, unpacked and recorded.
    public func layerLock(_ chainID: Digest) -> String { locksDir + "/" + chainID.hex + ".lock" }
    /// `ROOT/blobs/sha256/<hex>`.
    public func blob(_ digest: Digest) -> String { blobsDir + "/" + digest.hex }
    /// `ROOT/containers/<id>`.
    public func containerDir(_ id: String) -> String { containersDir + "/" + id }

    /// The symlink target of a layer's short link (relative, so the store can move).
    static func shortLinkTarget(_ chainID: Digest) -> String { "../layers/\(chainID.hex)/diff" }

    /// The default store root: `/var/lib/layertool` for root; otherwise
    /// `$XDG_DATA_HOME/layertool`, or `~/.local/share/layertool`.
    public static func defaultRoot(environment: [String: String], isRoot: Bool = geteuid() == 0) -> String {
        if isRoot { return "/var/lib/layertool" }
        if let xdg = environment["XDG_DATA_HOME"], xdg.hasPrefix("/") { return xdg + "/layertool" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? getpwuid(geteuid()).flatMap { $0.pointee.pw_dir.map { String(cString: $0) } } ?? "/"
        return home + "/.local/share/layertool"
    }
}
