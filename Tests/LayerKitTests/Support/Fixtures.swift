import Foundation

/// The repository root (for fixtures/ and the embedding article).
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.path + "/Package.swift") { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}()

/// fixtures/ (fixtures/README.md describes every file in it).
let fixturesDir = repositoryRoot + "/fixtures"

/// The bundled busybox image (fixtures/busybox, an OCI layout tagged `latest`): what
/// fixtures/README.md says of it, written once. Layer 1 is gzip, layer 2 zstd; layer 2 whites out
/// `etc/motd` and makes `etc/removed-later` opaque.
enum BusyboxFixture {
    static let layout = fixturesDir + "/busybox"

    /// The layer blobs' digests, bottom first.
    static let layerDigests = [
        "sha256:b4b440e5186b23932c70e5a0df2931d32cce16fe7923573c960f6fc52284829d",
        "sha256:6a24f99c3a20a70e4e2d937b9b11219a0df93c296ef872f4dc113e0e0e75c55a",
    ]
    /// The layer blobs' sizes, bottom first.
    static let layerSizes = [1_031_631, 300]
    /// The layers' diffIDs (sha256 of the uncompressed tars), bottom first.
    static let diffIDs = [
        "sha256:0763ad56266eef7808506d5feafa461aaace603b78cd626ae0c9750809a39b5e",
        "sha256:9b64236aa505e78808f49bbd7e66a9efb58793ed83ea4be411ce3793d5aa66a5",
    ]
    /// The chainID of the whole image, as printed by
    /// `printf 'sha256:0763... sha256:9b64...' | sha256sum`.
    static let chainID = "sha256:ad71021e87ed0500d278e7458f204464a346f7549d3015cd6b6fd4f7493daee4"
    static let manifestDigest = "sha256:d2972f1bc4a4fa016a952576e376e10917d5e0d80a3f377c652ecf4246de5292"
    static let configDigest = "sha256:4e39c759aca4d6ad8e654ee3b2a2e7764ed60a5e0cda45dcf358c6904441e31f"

    /// The blob file of layer `index` (0-based) in the fixture.
    static func layerBlob(_ index: Int) -> String { TestLayout.blobPath(layout, layerDigests[index]) }
}

/// The diffID of the empty layer (an end-of-archive marker alone: 1024 zero bytes), Docker's
/// well-known `sha256:5f70bf18...`.
let emptyLayerDiffID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
