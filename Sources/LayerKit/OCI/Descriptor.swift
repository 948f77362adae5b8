/// An OCI content descriptor (image-spec `descriptor.md`): what a blob is, its digest and size.
public struct Descriptor: Codable, Sendable, Equatable, Hashable {
    public var mediaType: String
    public var digest: Digest
    /// The blob's size in bytes: every read of the blob is bounded by it.
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var platform: Platform?
    public var artifactType: String?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

/// The platform an image manifest is for.
public struct Platform: Codable, Sendable, Equatable, Hashable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var osVersion: String?
    public var osFeatures: [String]?
    public var variant: String?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// `os/architecture[/variant]`.
    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    /// The platform this program runs on, in OCI's names (`linux/amd64`, `linux/arm64/v8`...).
    public static var host: Platform {
        #if arch(x86_64)
        return Platform(os: "linux", architecture: "amd64")
        #elseif arch(arm64)
        return Platform(os: "linux", architecture: "arm64", variant: "v8")
        #elseif arch(arm)
        return Platform(os: "linux", architecture: "arm", variant: "v7")
        #elseif arch(i386)
        return Platform(os: "linux", architecture: "386")
        #else
        return Platform(os: "linux", architecture: "unknown")
        #endif
    }

    /// Whether an index entry for `other` runs here: same OS and architecture, and the same
    /// variant when both name one (`arm64` entries often leave out `v8`).
    public func accepts(_ other: Platform) -> Bool {
        guard os == other.os, architecture == other.architecture else { return false }
        guard let mine = variant, let theirs = other.variant else { return true }
        return mine == theirs
    }
}
