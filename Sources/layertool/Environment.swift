import Foundation
import LayerKit

/// The environment variables layertool reads, in one place. The library reads none: these only
/// fill its options, for comparisons and tests.
///
/// - `LAYERKIT_GZIP=zlib`: decode gzip with zlib instead of ISA-L.
/// - `LAYERKIT_DIFF_STREAMING=0`: walk a full first layer or an upper dir before writing it.
/// - `LAYERKIT_ZSTD_WORKERS=N`: libzstd worker threads for zstd layers.
/// - `LAYERKIT_OVERLAY_MOUNT=mount2`: mount overlays with mount(2) even where the new mount API works.
/// - `LAYERKIT_STORE_CRASH=POINT[:N]`: kill the process at a store crash point (crash tests).
enum ToolEnvironment {
    static let variables = ProcessInfo.processInfo.environment

    /// Apply options as the environment asks.
    static func applyOptions() -> ApplyOptions {
        var options = ApplyOptions()
        if let kind = variables["LAYERKIT_GZIP"].flatMap(GzipDecoderKind.init(rawValue:)) { options.gzipDecoder = kind }
        return options
    }

    /// Overlay mount options as the environment asks.
    static func mountOptions() -> OverlayMounter.Options {
        OverlayMounter.Options(forceMountSyscall: variables["LAYERKIT_OVERLAY_MOUNT"] == "mount2")
    }

    /// The store's configuration as the environment asks; arms a crash point if one is named.
    static func storeConfiguration() -> LayerStore.Configuration {
        FaultInjection.arm(variables["LAYERKIT_STORE_CRASH"])
        var configuration = LayerStore.Configuration()
        configuration.mountOptions = mountOptions()
        configuration.gzipDecoder = applyOptions().gzipDecoder
        return configuration
    }

    /// Diff options as the environment asks.
    static func diffOptions(compression: Compression) -> DiffOptions {
        var options = DiffOptions(compression: compression)
        if variables["LAYERKIT_DIFF_STREAMING"] == "0" { options.streamFullLayers = false }
        if compression == .zstd, let workers = variables["LAYERKIT_ZSTD_WORKERS"].flatMap({ Int($0) }) { options.threads = workers }
        return options
    }
}
