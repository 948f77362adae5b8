import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// `docker save` tarballs: the older manifest.json form and the OCI layout Docker 25+ writes.
@Suite(.requires(.root(because: "an overlay-format store"), .tools("tar", "gzip", "zstd")))
struct DockerArchiveTests {
    /// An entry of an older `docker save` archive's manifest.json.
    struct LegacyManifestEntry: Encodable {
        var config: String
        var repoTags: [String]
        var layers: [String]
        enum CodingKeys: String, CodingKey {
            case config = "Config"
            case repoTags = "RepoTags"
            case layers = "Layers"
        }
    }

    /// The busybox fixture rewritten as an older `docker save` archive: uncompressed layers in
    /// `<id>/layer.tar`, the config as `<hex>.json`, `manifest.json` with RepoTags.
    static func legacyArchive(in tmp: TempDir, manifestLayers: [String]? = nil) throws -> String {
        let busybox = BusyboxFixture.layout
        let dir = tmp.mkdir("docker-save")
        let manifest = try TestLayout.manifest(of: busybox)
        let configFile = String(manifest.config.digest.dropFirst("sha256:".count)) + ".json"
        try FileManager.default.copyItem(atPath: TestLayout.blobPath(busybox, manifest.config.digest), toPath: dir + "/" + configFile)
        var names = [String]()
        for (i, layer) in manifest.layers.enumerated() {
            let tool = try requireTool(layer.mediaType.hasSuffix("zstd") ? "zstd" : "gzip")
            try FileManager.default.createDirectory(atPath: dir + "/layer\(i)", withIntermediateDirectories: true)
            let r = try run("/bin/sh", ["-c", "\"$1\" -dc \"$2\" > \"$3\"", "sh", tool, TestLayout.blobPath(busybox, layer.digest), dir + "/layer\(i)/layer.tar"])
            try #require(r.status == 0, "\(r.stderr)")
            names.append("layer\(i)/layer.tar")
        }
        let entries = [LegacyManifestEntry(config: configFile, repoTags: ["busybox:1.35"], layers: manifestLayers ?? names)]
        try JSON.write(entries, to: dir + "/manifest.json")
        let archive = tmp.sub("busybox-docker.tar")
        let r = try run(try requireTool("tar"), ["-C", dir, "-cf", archive, "."])
        try #require(r.status == 0, "\(r.stderr)")
        return archive
    }

    @Test func olderDockerSaveArchivesImportAndFlatten() throws {
        let tmp = TempDir("docker-save")
        let archive = try Self.legacyArchive(in: tmp)
        let store = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", archive, "--root", store, "--json"])
        let record = try r.json(LayertoolOutput.Import.self)
        #expect(record.name == "busybox:1.35")
        let chain = DigestOracle.chainIDs(try TestLayout.diffIDs(of: BusyboxFixture.layout))
        #expect(record.chainID == chain.last)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/staging").isEmpty, "the extracted archive was left in staging")

        // Flattened, the archive gives the same tree as the OCI layout it came from.
        let fromArchive = tmp.sub("from-archive"), fromLayout = tmp.sub("from-layout")
        #expect(try Layertool.run(["unpack", "--image", archive, fromArchive]).status == 0)
        #expect(try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":latest", fromLayout]).status == 0)
        let a = TreeSnapshot(fromArchive), b = TreeSnapshot(fromLayout)
        #expect(a.nodes.count > 250 && a == b, "\(a.differences(from: b).prefix(5))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path).allSatisfy { !$0.hasPrefix(".layertool-archive") })
    }

    @Test func dockerSaveArchivesWithAnOCILayoutImportAsTheLayout() throws {
        let tmp = TempDir("docker-save-oci")
        let archive = tmp.sub("oci.tar")
        #expect(try run(try requireTool("tar"), ["-C", BusyboxFixture.layout, "-cf", archive, "."]).status == 0)
        let store = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", archive + ":latest", "--root", store, "--name", "bb", "--json"])
        let record = try r.json(LayertoolOutput.Import.self)
        let fixture = try JSON.read(ImageSpec.Index.self, file: BusyboxFixture.layout + "/index.json").manifests.first?.digest
        #expect(record.manifestDigest == fixture)
    }

    @Test func aManifestNamingFilesOutsideTheArchiveIsRefused() throws {
        let tmp = TempDir("docker-save-evil")
        let archive = try Self.legacyArchive(in: tmp, manifestLayers: ["../../../../etc/passwd"])
        let store = tmp.sub("store")
        let r = try Layertool.run(["unpack", "--image", archive, "--root", store])
        #expect(r.status == 1 && r.stderr.contains("entry \"../../../../etc/passwd\": manifest.json names a file outside the archive"), "\(r.stderr)")
        #expect(try LayerStore(root: store).images().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/staging").isEmpty)
    }
}
