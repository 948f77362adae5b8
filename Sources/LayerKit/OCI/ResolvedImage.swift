/// A layer of a resolved image: its blob's descriptor, the diffID its tar must hash to, and where
/// its bytes come from.
public struct ImageLayer: Sendable {
    public var descriptor: Descriptor
    public var diffID: Digest
    /// The blob, for an unpack: read inside its layout, up to its descriptor's size.
    public var source: LayerSource
}

/// An image picked out of a layout: its manifest, config and layers, bottom layer first.
public struct ResolvedImage: Sendable {
    /// The reference it was found by (or its tag in the layout).
    public var reference: String?
    public var manifestDescriptor: Descriptor
    public var manifest: ImageManifest
    /// The manifest's bytes, as stored (their digest is the manifest's).
    public var manifestBytes: [UInt8]
    public var config: ImageConfig
    /// The config's bytes, as stored.
    public var configBytes: [UInt8]
    public var layers: [ImageLayer]

    /// The chainID of each layer, bottom first.
    public var chainIDs: [Digest] { ChainID.chain(layers.map(\.diffID)) }
}
