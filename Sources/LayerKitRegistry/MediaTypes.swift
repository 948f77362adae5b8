/// The manifest media types of the distribution protocol.
public enum ManifestMediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    /// Docker's schema 1 (signed or not): refused.
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    /// What a manifest GET accepts, most wanted first.
    public static let accepted = [ociIndex, ociManifest, dockerManifestList, dockerManifest]

    public static func isIndex(_ mediaType: String) -> Bool { mediaType == ociIndex || mediaType == dockerManifestList }
    public static func isManifest(_ mediaType: String) -> Bool { mediaType == ociManifest || mediaType == dockerManifest }
    public static func isSchema1(_ mediaType: String) -> Bool { mediaType == dockerSchema1 || mediaType == dockerSchema1Signed }

    /// Image config media types.
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
}
