import Logging
#if canImport(Glibc)
import Glibc
#endif

/// How a layer is written onto its target directory.
public struct ApplyOptions: Sendable {
    /// The shape of the result.
    public enum Format: Sendable, Equatable {
        /// Changes applied directly, like `tar -x` plus whiteout processing: the target is a full tree.
        case plain
        /// The layer on its own, in kernel overlayfs's format, for use as an overlay lower/upper dir:
        /// a whiteout becomes a char device 0/0, an opaque dir gets `<namespace>.overlay.opaque=y`.
        case overlay(OverlayXattrNamespace)
    }

    public var format: Format
    /// Apply the archive's numeric uid/gid. Defaults to true when running as root (like GNU tar's
    /// `--same-owner`); without privilege files belong to the caller.
    public var preserveOwnership: Bool
    /// Which xattrs of the archive are applied.
    public var xattrPolicy: XattrPolicy
    /// Overlay format only: the layers below this one, top first. Used to copy up a file that a
    /// hardlink entry names but that lives in a lower layer, and to give an implied parent dir the
    /// metadata it has below (rather than 0755 root:root, which would hide it).
    public var lowerDirs: [String]
    /// The gzip decoder (ISA-L unless comparing with zlib).
    public var gzipDecoder: GzipDecoderKind
    /// Threads that create small files while the archive is parsed (0: every file is created on
    /// the parsing thread). Used when the target starts empty (a new dir, a store layer); an
    /// unpack onto a dir with content is always serial. The tree is the same either way.
    public var applyWorkers: Int = ApplyOptions.defaultApplyWorkers
    /// One worker: measured best on two cores (BENCHMARKS.md, many small files).
    public static let defaultApplyWorkers = 1
    /// Write each file under a temporary name and rename it into place, so a failure never leaves
    /// a partial file under a real name (an unpack onto a dir that already has content).
    var writesFilesAtomically = false
    /// Where warnings go (xattrs the file system refused, skipped sockets and devices); they are
    /// also returned in each `LayerSummary`. Discards by default.
    public var logger: Logger

    public init(format: Format = .plain,
                preserveOwnership: Bool = geteuid() == 0,
                xattrPolicy: XattrPolicy = XattrPolicy(),
                lowerDirs: [String] = [],
                gzipDecoder: GzipDecoderKind = .isal,
                logger: Logger = .discarding) {
        self.format = format
        self.preserveOwnership = preserveOwnership
        self.xattrPolicy = xattrPolicy
        self.lowerDirs = lowerDirs
        self.gzipDecoder = gzipDecoder
        self.logger = logger
    }
}

extension Logger {
    /// A logger that drops everything: the default wherever a caller gives none.
    public static let discarding = Logger(label: "layerkit", factory: { _ in SwiftLogNoOpLogHandler() })
}
