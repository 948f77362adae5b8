import Foundation
import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The embedding article's program, taken from the article itself, built as a package of its own
/// beside the repository (depending on LayerKit by path, as an outside runtime would) and run:
/// it flattens the busybox fixture, cancels an unpack, imports, mounts, changes, commits and
/// exports, and its Logger receives LayerKit's warning about the socket it left.
@Suite(.serialized) struct EmbeddingExampleTests {
    static let article = repositoryRoot + "/Sources/LayerKit/LayerKit.docc/EmbeddingLayerKit.md"

    /// The article's code blocks that start with `// <file name>` or `// swift-tools-version`.
    static func codeBlocks() throws -> (manifest: String, source: String) {
        let text = try String(contentsOfFile: article, encoding: .utf8)
        var blocks = [String]()
        var current: [Substring]? = nil
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```swift" { current = []; continue }
            if current != nil, line == "```" { blocks.append(current!.joined(separator: "\n") + "\n"); current = nil; continue }
            current?.append(line)
        }
        let manifest = try #require(blocks.first { $0.hasPrefix("// swift-tools-version") }, "no Package.swift block in the article")
        let source = try #require(blocks.first { $0.hasPrefix("// MyRuntime.swift") }, "no MyRuntime.swift block in the article")
        return (manifest, source)
    }

    /// swift builds the example; unshare gives it a private mount namespace.
    @Test(.requires(.root(because: "the example mounts a container"), .tools("swift", "unshare")))
    func theArticlesProgramRunsAgainstTheLibrary() throws {
        let tmp = TempDir("embedding")
        // The package is named after its path's last component: `LayerKit`, as in the article.
        try FileManager.default.createSymbolicLink(atPath: tmp.sub("LayerKit"), withDestinationPath: repositoryRoot)
        let package = tmp.mkdir("MyRuntime")
        let sources = tmp.mkdir("MyRuntime/Sources/MyRuntime")
        let (manifest, source) = try Self.codeBlocks()
        try manifest.write(toFile: package + "/Package.swift", atomically: true, encoding: .utf8)
        try source.write(toFile: sources + "/MyRuntime.swift", atomically: true, encoding: .utf8)

        let build = try run(try requireTool("swift"), ["build", "--package-path", package, "-Xswiftc", "-warnings-as-errors"])
        try #require(build.status == 0, "the article's program does not build:\n\(build.stdout)\n\(build.stderr)")

        let scratch = tmp.mkdir("scratch")
        let result = try run(try requireTool("unshare"), ["-m", "--propagation", "private", package + "/.build/debug/MyRuntime", BusyboxFixture.layout, scratch])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let output = result.stdout + result.stderr
        #expect(output.contains("flattened 2 layers: chainID \(BusyboxFixture.chainID)"), "\(output)")
        #expect(output.contains("cancelled: nothing left"), "\(output)")
        #expect(output.contains("imported busybox: 2 layers"), "\(output)")
        #expect(output.contains("with overlay (mount-api)") || output.contains("with fuse (fuse)"), "\(output)")
        #expect(output.contains("warning myruntime.layers") && output.contains("entry \"control.sock\": socket skipped"),
                "the socket warning reaches the program's Logger:\n\(output)")

        // What it exported: the image with its new layer, read back and flattened.
        let image = try OCIImageLayout(path: scratch + "/out").resolve("changed")
        #expect(image.layers.count == 3)
        let tree = scratch + "/check"
        _ = try Unpacker().unpackImage(at: scratch + "/out", reference: "changed", to: tree)
        #expect(try String(contentsOfFile: tree + "/hello.txt", encoding: .utf8) == "written by the container\n")
        #expect(!FileManager.default.fileExists(atPath: tree + "/bin/ls"), "the deleted file is gone in the committed image")
        #expect(FileManager.default.fileExists(atPath: tree + "/bin/busybox"))
        #expect(!FileManager.default.fileExists(atPath: tree + "/control.sock"))
        #expect(!FileManager.default.fileExists(atPath: scratch + "/cancelled"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch).filter { $0.contains(".layertool-") }
        #expect(leftovers.isEmpty, "staging dirs left: \(leftovers)")
    }
}
