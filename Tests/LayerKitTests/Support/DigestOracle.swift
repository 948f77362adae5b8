import Crypto
import Foundation

/// Digests computed here with swift-crypto, independently of LayerKit's `Digest`, `SHA256Hasher`
/// and `ChainID`, so a test can check what LayerKit computes against the specs' formulas.
enum DigestOracle {
    /// The lowercase hex sha256 of `bytes`.
    static func hex(_ bytes: some DataProtocol) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// The lowercase hex sha256 of the content of the file at `path`, or nil when it cannot be read.
    static func hex(ofFile path: String) -> String? {
        FileManager.default.contents(atPath: path).map { hex($0) }
    }

    /// `sha256:<hex>` of `bytes`, as OCI digests are written.
    static func sha256(_ bytes: some DataProtocol) -> String { "sha256:" + hex(bytes) }

    /// The chainIDs of a stack of layers per the OCI image spec: the first layer's is its diffID,
    /// each next one is `sha256("<chainID below> <diffID>")`.
    static func chainIDs(_ diffIDs: [String]) -> [String] {
        var chain = [String]()
        for diffID in diffIDs {
            chain.append(chain.last.map { sha256(Data("\($0) \(diffID)".utf8)) } ?? diffID)
        }
        return chain
    }
}
