/// ChainIDs per the OCI image spec (config.md, "Layer ChainID").
public enum ChainID {
    /// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`.
    /// Returns one chainID per layer, bottom layer first; empty for no layers.
    public static func chain(_ diffIDs: [Digest]) -> [Digest] {
        var result = [Digest]()
        result.reserveCapacity(diffIDs.count)
        for diffID in diffIDs {
            if let previous = result.last {
                result.append(Digest.sha256(of: Array((previous.description + " " + diffID.description).utf8)))
            } else {
                result.append(diffID)
            }
        }
        return result
    }

    /// The chainID of the whole stack (the top layer's chainID); nil for no layers.
    public static func of(_ diffIDs: [Digest]) -> Digest? { chain(diffIDs).last }
}
