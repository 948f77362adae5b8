/// The media types of image documents and layers, named once.
public enum MediaType {
    /// An OCI image index (a multi-platform image, or an OCI layout's `index.json`).
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    /// An OCI image manifest.
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    /// An OCI image config.
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    /// An uncompressed OCI layer (`+gzip` and `+zstd` for the compressed ones: `ociLayer(_:)`).
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    /// Docker's manifest list (schema 2).
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    /// Docker's image manifest (schema 2).
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    /// Docker's image config.
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    /// Docker's gzip layer.
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    /// Docker's uncompressed layer.
    public static let dockerLayer = "application/vnd.docker.image.rootfs.diff.tar"
    /// Docker's foreign (non-distributable) gzip layer.
    public static let dockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    /// Docker's schema 1 manifests (deprecated; refused).
    public static let dockerSchema1Manifests: Set<String> = [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ]

    /// The OCI layer media type for a compression.
    public static func ociLayer(_ compression: Compression) -> String {
        ociLayer + compression.mediaTypeSuffix
    }

    /// Layer media types LayerKit reads (the deprecated non-distributable ones included; it never
    /// writes those).
    public static let readableLayers: Set<String> = [
        ociLayer, ociLayer + "+gzip", ociLayer + "+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        dockerLayerGzip, dockerLayer, dockerForeignLayerGzip,
    ]

    /// The OCI media type of a layer of another type (Docker's), for an OCI manifest.
    public static func ociEquivalent(ofLayer mediaType: String) -> String {
        switch mediaType {
        case dockerLayerGzip: return ociLayer + "+gzip"
        case dockerLayer: return ociLayer
        case dockerForeignLayerGzip: return "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        default: return mediaType
        }
    }

    /// Whether a document of this type lists manifests for several platforms.
    public static func isIndex(_ mediaType: String?) -> Bool {
        mediaType == ociIndex || mediaType == dockerManifestList
    }

    /// Whether a document of this type is an image manifest.
    public static func isManifest(_ mediaType: String?) -> Bool {
        mediaType == ociManifest || mediaType == dockerManifest
    }
}

/// Annotation keys LayerKit reads and writes.
public enum Annotation {
    /// The reference (tag) of a manifest in an OCI layout's `index.json`.
    public static let referenceName = "org.opencontainers.image.ref.name"
}
