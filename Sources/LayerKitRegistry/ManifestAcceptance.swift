import LayerKit

/// The manifest media types the registry client asks for and reads (the constants are
/// LayerKit's `MediaType`).
enum ManifestAcceptance {
    /// What a manifest GET accepts, most wanted first: OCI index and manifest, Docker's manifest
    /// list and schema 2 manifest.
    static let accepted = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest]

    /// Docker's schema 1 (signed or not): refused.
    static func isSchema1(_ mediaType: String) -> Bool { MediaType.dockerSchema1Manifests.contains(mediaType) }
}
