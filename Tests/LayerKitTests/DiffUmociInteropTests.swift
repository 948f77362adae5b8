import CLayerSys
import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// An OCI image whose layers are written by LayerDiffer (`diff EMPTY OLD` and `diff OLD NEW`),
// unpacked by umoci, by `layertool unpack --image` and by the library's Unpacker, must give NEW;
// GNU tar and bsdtar list the diff layer without a complaint.
//
// Trees are compared with TreeSnapshot. umoci by design differs from a plain tree copy on dir
// mtimes, so those are compared only against the Unpacker.

@Suite(.requires(.root(because: "umoci without root needs --rootless, which changes ownership by design"),
                 .tools("umoci", "tar", "bsdtar")))
struct DiffUmociInteropTests {
    /// Layer 1 = diff EMPTY OLD, layer 2 = diff OLD NEW (NEW = OLD with random mutations), both gzip,
    /// in an OCI layout. umoci and `layertool unpack --image` must both give NEW.
    @Test(arguments: 0..<6)
    func twoDiffLayersUnpackToNew(_ seed: Int) throws {
        try Self.check(seed: seed, mutations: 30, layer2: .gzip)
    }

    /// NEW == OLD: layer 2 is the empty tar (diffID sha256:5f70bf18..., Docker's well-known empty layer).
    @Test func unchangedTreeGivesAnEmptyLayerThatUnpacks() throws {
        try Self.check(seed: 100, mutations: 0, layer2: .gzip)
    }

    /// The same, uncompressed (what `layertool diff OLD NEW -o layer.tar` writes when nothing changed).
    @Test
    func unchangedTreeGivesAnUncompressedEmptyLayerThatUnpacks() throws {
        try Self.check(seed: 100, mutations: 0, layer2: .none)
    }

    static func check(seed: Int, mutations: Int, layer2 compression: Compression,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let tmp = TempDir("diff-umoci")
        let empty = tmp.mkdir("empty")
        let old = tmp.mkdir("old")
        // EMPTY and OLD roots alike, so layer 1's root entry (if any) only says what OLD's root is.
        try copyOwnerAndMode(of: old, to: empty)
        var gen = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &* 2_654_435_761 &+ 99), root: old)
        for _ in 0..<70 { gen.addEntry() }
        let new = tmp.sub("new")
        try copyTree(old, new)
        var mutator = TreeGenerator(rng: SeededRandom(state: UInt64(seed) &+ 5_000_011), root: new, files: gen.files, dirs: gen.dirs)
        for _ in 0..<mutations { mutator.mutate() }

        let layer1 = tmp.sub("layer1.tar.gz"), layer2 = tmp.sub("layer2")
        let r1 = try LayerDiffer(options: DiffOptions(compression: .gzip)).write(.trees(old: empty, new: old), toFile: layer1)
        let r2 = try LayerDiffer(options: DiffOptions(compression: compression)).write(.trees(old: old, new: new), toFile: layer2)
        #expect(r1.warnings.isEmpty && r2.warnings.isEmpty, "diff warnings: \(r1.warnings) \(r2.warnings)", sourceLocation: sourceLocation)
        #expect(r2.descriptor.mediaType == "application/vnd.oci.image.layer.v1.tar" + compression.mediaTypeSuffix, sourceLocation: sourceLocation)
        let want = TreeSnapshot(new)
        if mutations > 0 {
            #expect(r2.entryCount > 0, sourceLocation: sourceLocation)
            #expect(!TreeSnapshot(old).differences(from: want).isEmpty, "the mutations changed something", sourceLocation: sourceLocation)
        } else {
            #expect(r2.entryCount == 0 && r2.tarSize == 1024 && r2.diffID.description == emptyLayerDiffID,
                    "nothing changed: the empty layer (\(r2.entryCount) entries, \(r2.tarSize) bytes, \(r2.diffID))", sourceLocation: sourceLocation)
        }

        // GNU tar and bsdtar list layer 2 without a word on stderr.
        for tool in ["tar", "bsdtar"] {
            let listing = try run(try requireTool(tool), ["-tvf", layer2])
            #expect(listing.status == 0 && listing.stderr.isEmpty, "\(tool) -tvf layer 2: status \(listing.status), stderr: \(listing.stderr)",
                    sourceLocation: sourceLocation)
            #expect(listing.stdout.split(separator: "\n").count == r2.entryCount, "\(tool) lists every entry", sourceLocation: sourceLocation)
        }

        let layout = tmp.sub("layout")
        try TestLayout.write(layout, layers: [try Self.layoutLayer(layer1, r1), try Self.layoutLayer(layer2, r2)], tag: "latest",
                             created: "2024-01-01T00:00:00Z", command: ["/bin/sh"], indexMediaType: ImageSpec.indexMediaType)

        // umoci. By design it differs from a plain tree copy on dir mtimes (not compared) and would
        // apply trusted.* xattrs (our layers carry none: the differ's xattr policy leaves them out).
        let bundle = tmp.sub("bundle")
        let u = try run(try requireTool("umoci"), ["unpack", "--image", "\(layout):latest", bundle])
        try #require(u.status == 0, "umoci unpack: \(u.stderr)", sourceLocation: sourceLocation)
        TreeSnapshot.expectSame(want, "NEW (seed \(seed))", TreeSnapshot(bundle + "/rootfs"), "umoci unpack", sourceLocation: sourceLocation)

        // layertool unpack --image (the CLI), and the library's Unpacker on the same layout.
        let cliDest = tmp.sub("layertool-rootfs")
        let l = try Layertool.run(["unpack", "--image", "\(layout):latest", cliDest])
        #expect(l.status == 0, "layertool unpack --image: \(l.stderr)", sourceLocation: sourceLocation)
        if l.status == 0 {
            #expect(l.stdout.contains(r2.diffID.description), "layertool prints layer 2's diffID: \(l.stdout)", sourceLocation: sourceLocation)
            TreeSnapshot.expectSame(want, "NEW (seed \(seed))", TreeSnapshot(cliDest), "layertool unpack --image", sourceLocation: sourceLocation)
        }
        let image = try OCIImageLayout(path: layout).resolve("latest")
        #expect(image.layers.map(\.diffID) == [r1.diffID, r2.diffID], sourceLocation: sourceLocation)
        let dest = tmp.sub("unpacker-rootfs")
        let summaries = try Unpacker().unpack(image.layers.map {
            LayerInput(source: $0.source, expecting: LayerExpectation(blobDigest: $0.descriptor.digest, diffID: $0.diffID))
        }, to: dest)
        #expect(summaries.allSatisfy { $0.warnings.isEmpty }, "unpack warnings: \(summaries.map(\.warnings))", sourceLocation: sourceLocation)
        // Both sides set every dir's mtime from the layers here, so dir mtimes are compared too.
        TreeSnapshot.expectSame(TreeSnapshot(new, options: .init(dirMtimes: true)), "NEW (seed \(seed))",
                                TreeSnapshot(dest, options: .init(dirMtimes: true)), "Unpacker (dir mtimes compared)", sourceLocation: sourceLocation)
    }

    /// A layer file the differ wrote, for TestLayout; the digest and size its descriptor gives are
    /// checked against the file's own.
    static func layoutLayer(_ file: String, _ result: DiffResult, sourceLocation: SourceLocation = #_sourceLocation) throws -> TestLayout.Layer {
        let blob = try #require(FileManager.default.contents(atPath: file), sourceLocation: sourceLocation)
        #expect(result.descriptor.digest.description == DigestOracle.sha256(blob), "\(file): descriptor digest", sourceLocation: sourceLocation)
        #expect(result.descriptor.size == Int64(blob.count), "\(file): descriptor size", sourceLocation: sourceLocation)
        return TestLayout.Layer(blob: blob, diffID: result.diffID.description, mediaType: result.descriptor.mediaType)
    }
}
