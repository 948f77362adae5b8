import Crypto
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// End-to-end tests of the `layertool` binary: what it prints, what it exits with, and what it
// leaves on disk, for good layers, bad layers and OCI image layouts (fixtures/README.md describes
// every fixture). Digests are checked against sha256sum/gzip/zstd run here, not only against the
// values written in the README.

/// Helpers for running the built tool and the reference tools.
private enum CLI {
    /// The binary under test: LAYERTOOL_BIN, or the debug build `swift test` makes (the test
    /// target depends on the layertool target, so it is built first).
    static let binary = ProcessInfo.processInfo.environment["LAYERTOOL_BIN"] ?? repositoryRoot + "/.build/debug/layertool"
    static let layers = fixturesDir + "/layers"
    static let busybox = fixturesDir + "/busybox"
    static let bash = which("bash") ?? "/bin/bash"

    static let busyboxLayer1 = "sha256:b4b440e5186b23932c70e5a0df2931d32cce16fe7923573c960f6fc52284829d"
    static let busyboxLayer2 = "sha256:6a24f99c3a20a70e4e2d937b9b11219a0df93c296ef872f4dc113e0e0e75c55a"
    static let busyboxDiff1 = "sha256:0763ad56266eef7808506d5feafa461aaace603b78cd626ae0c9750809a39b5e"
    static let busyboxDiff2 = "sha256:9b64236aa505e78808f49bbd7e66a9efb58793ed83ea4be411ce3793d5aa66a5"

    static var haveDigestTools: Bool { ["sha256sum", "gzip", "zstd", "bash"].allSatisfy { which($0) != nil } }

    static func tool(_ args: [String], stdin: Data? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try run(binary, args, stdin: stdin)
    }

    /// Runs a bash script with `$1` = `arg`; returns stdout, failing the test on a non-zero exit.
    static func shell(_ script: String, _ arg: String) throws -> String {
        let r = try run(bash, ["-c", "set -euo pipefail; " + script, "bash", arg])
        try #require(r.status == 0, "bash -c '\(script)' \(arg) failed: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `sha256:<hex>` of a file, or of what `filter` (e.g. `gzip -dc`) makes of it, by sha256sum.
    static func sha256sum(_ file: String, through filter: String? = nil) throws -> String {
        let out = try shell((filter.map { "\($0) < \"$1\"" } ?? "cat \"$1\"") + " | sha256sum", file)
        let hex = String(out.prefix(while: { !$0.isWhitespace }))
        try #require(hex.count == 64, "sha256sum printed \(out)")
        return "sha256:" + hex
    }

    /// Bytes that `filter` makes of a file (`wc -c`).
    static func byteCount(_ file: String, through filter: String) throws -> Int {
        try #require(Int(try shell("\(filter) < \"$1\" | wc -c", file)))
    }

    static func decompressor(for file: String) -> String? {
        let head = (FileManager.default.contents(atPath: file) ?? Data()).prefix(4)
        if head.starts(with: [0x1f, 0x8b]) { return "gzip -dc" }
        if head.starts(with: [0x28, 0xb5, 0x2f, 0xfd]) || (head.count == 4 && head.first! & 0xF0 == 0x50 && head.dropFirst().starts(with: [0x2a, 0x4d, 0x18])) {
            return "zstd -dc"
        }
        return nil
    }

    /// The value on the line `  <label>  <value>` of the human output, for the layer `name`.
    static func field(_ label: String, in output: String, layer name: String) -> String? {
        var inLayer = false
        for line in output.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") { inLayer = line == "\(name):"; continue }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if inLayer && trimmed.hasPrefix(label + " ") {
                return trimmed.dropFirst(label.count).trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }

    static func chainLine(_ output: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix("chainID ") }.map { String($0.dropFirst("chainID ".count)) }
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    static func sha256(_ data: Data) -> String { sha256(Array(data)) }

    /// Bare hex sha256, as TreeSnapshot records file content.
    static func hex(_ bytes: [UInt8]) -> String { String(sha256(bytes).dropFirst("sha256:".count)) }

    /// ChainIDs per the image spec, computed here independently of LayerKit.
    static func chain(_ diffIDs: [String]) -> [String] {
        var out = [String]()
        for d in diffIDs { out.append(out.last.map { sha256(Array("\($0) \(d)".utf8)) } ?? d) }
        return out
    }

    /// Asserts the one-line error contract: exit 1 (any non-zero status when `status` is nil),
    /// exactly one stderr line `layertool: <layer>: [entry "<entry>": ]<reason>`, no crash report.
    static func expectCleanError(_ r: (status: Int32, stdout: String, stderr: String), layer: String, entry: String? = nil,
                                 reasonContainsOneOf keywords: [String] = [], status: Int32? = 1,
                                 sourceLocation: SourceLocation = #_sourceLocation) {
        if let status {
            #expect(r.status == status, "exit status \(r.status); stderr: \(r.stderr)", sourceLocation: sourceLocation)
        } else {
            #expect(r.status != 0, "exit status 0; stderr: \(r.stderr)", sourceLocation: sourceLocation)
        }
        expectNoCrash(r.stderr, sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 2 && lines[1].isEmpty, "stderr must be exactly one line, got: \(r.stderr.debugDescription)",
                sourceLocation: sourceLocation)
        let line = String(lines.first ?? "")
        let prefix = "layertool: \(layer): " + (entry.map { "entry \"\($0)\": " } ?? "")
        #expect(line.hasPrefix(prefix), "stderr \(line.debugDescription) should start with \(prefix.debugDescription)",
                sourceLocation: sourceLocation)
        let reason = line.hasPrefix(prefix) ? String(line.dropFirst(prefix.count)) : line
        #expect(!reason.trimmingCharacters(in: .whitespaces).isEmpty, "no reason given", sourceLocation: sourceLocation)
        if !keywords.isEmpty {
            #expect(keywords.contains { reason.localizedCaseInsensitiveContains($0) },
                    "reason \(reason.debugDescription) should mention one of \(keywords)", sourceLocation: sourceLocation)
        }
    }

    static func expectNoCrash(_ stderr: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for word in ["Fatal error", "Crash", "backtrace"] {
            #expect(!stderr.localizedCaseInsensitiveContains(word), "stderr looks like a crash report: \(stderr)",
                    sourceLocation: sourceLocation)
        }
    }

    /// A destination with content the tool must not touch when it fails: files the fixture layers
    /// would overwrite, a dir, a symlink, odd modes and times.
    static func populate(_ dest: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dest + "/dir/sub", withIntermediateDirectories: true)
        fm.createFile(atPath: dest + "/dir/file.txt", contents: Data("not from the layer\n".utf8))
        fm.createFile(atPath: dest + "/keep.txt", contents: Data("precious\n".utf8))
        fm.createFile(atPath: dest + "/dir/sub/nested.txt", contents: Data("mine\n".utf8))
        fm.createFile(atPath: dest + "/passwd", contents: Data("x\n".utf8))
        try fm.createSymbolicLink(atPath: dest + "/link", withDestinationPath: "keep.txt")
        chmod(dest + "/dir/sub", 0o700)
        chmod(dest + "/keep.txt", 0o600)
        for p in ["/dir/file.txt", "/keep.txt", "/dir/sub/nested.txt", "/passwd", "/dir/sub", "/dir", ""] {
            var times = [timespec(tv_sec: 1_234_567_890, tv_nsec: 0), timespec(tv_sec: 1_234_567_890, tv_nsec: 0)]
            utimensat(AT_FDCWD, dest + p, &times, AT_SYMLINK_NOFOLLOW)
        }
    }

    /// Everything about a tree, dir mtimes included: a failed unpack must not change any of it.
    static func strictSnapshot(_ root: String) -> TreeSnapshot {
        var options = TreeSnapshot.Options()
        options.dirMtimes = true
        return TreeSnapshot(root, options: options)
    }

    static func listing(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    /// Copies the busybox layout to `dir` (blobs are copied, not linked, so they can be changed).
    static func copyBusybox(to dir: String) throws {
        try FileManager.default.copyItem(atPath: busybox, toPath: dir)
    }

    static func flipByte(_ file: String, at offset: Int) throws {
        var data = try #require(FileManager.default.contents(atPath: file))
        let i = offset >= 0 ? offset : data.count + offset
        data[i] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: file))
    }

    static func blobPath(_ layout: String, _ digest: String) -> String {
        layout + "/blobs/sha256/" + digest.dropFirst("sha256:".count)
    }

    static func readJSON(_ file: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: file), "cannot read \(file)")
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(file) is not a JSON object")
    }

    /// Writes `object` as a blob of `layout`; returns its digest and size.
    static func writeBlob(_ object: Any, in layout: String) throws -> (digest: String, size: Int) {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        let digest = sha256(data)
        try data.write(to: URL(fileURLWithPath: blobPath(layout, digest)))
        return (digest, data.count)
    }
}

/// How DEST looks before a failing unpack.
enum DestState: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case missing, empty, populated
    var testDescription: String { rawValue }
}

/// A layertool invocation that must fail, and what its error line must say.
struct BadUnpack: Sendable, CustomTestStringConvertible {
    var label: String
    /// Arguments before DEST; `$L/` is replaced by the fixtures' layers dir.
    var args: [String]
    /// Bytes for standard input: a fixture layer's file name.
    var stdinLayer: String? = nil
    /// The layer the message must name (with `$L/` expanded).
    var layer: String
    var entry: String? = nil
    var keywords: [String]
    var testDescription: String { label }

    func expand(_ s: String) -> String { s.replacingOccurrences(of: "$L/", with: CLI.layers + "/") }

    static let zeros = "sha256:" + String(repeating: "0", count: 64)

    static let all: [BadUnpack] = [
        BadUnpack(label: "garbage", args: ["$L/garbage.bin"], layer: "$L/garbage.bin", keywords: ["not a layer", "neither"]),
        BadUnpack(label: "truncated gzip", args: ["$L/truncated.tar.gz"], layer: "$L/truncated.tar.gz",
                  keywords: ["truncated", "unexpected end", "premature"]),
        BadUnpack(label: "truncated zstd", args: ["$L/truncated.tar.zst"], layer: "$L/truncated.tar.zst",
                  keywords: ["truncated", "unexpected end", "premature"]),
        BadUnpack(label: "corrupt deflate", args: ["$L/corrupt.tar.gz"], layer: "$L/corrupt.tar.gz",
                  keywords: ["corrupt", "invalid"]),
        BadUnpack(label: "bad gzip crc", args: ["$L/corrupt-crc.tar.gz"], layer: "$L/corrupt-crc.tar.gz",
                  keywords: ["checksum", "crc", "data check"]),
        BadUnpack(label: "dotdot breakout", args: ["$L/breakout-dotdot.tar"], layer: "$L/breakout-dotdot.tar",
                  entry: "../escaped", keywords: ["escapes"]),
        BadUnpack(label: "hardlink breakout", args: ["$L/breakout-hardlink.tar"], layer: "$L/breakout-hardlink.tar",
                  entry: "passwd", keywords: ["escapes"]),
        BadUnpack(label: "missing file", args: ["$L/no-such-layer.tar.gz"], layer: "$L/no-such-layer.tar.gz",
                  keywords: ["no such file"]),
        BadUnpack(label: "wrong --digest", args: ["--digest", zeros, "$L/basic.tar.gz"], layer: "$L/basic.tar.gz",
                  keywords: ["digest mismatch"]),
        BadUnpack(label: "wrong --digest on 2nd layer",
                  args: ["--digest", "sha256:84510406a5a32571cd95b396ca33db939b591dee7e02c6400f337c85fa644538",
                         "--digest", zeros, "$L/basic.tar.gz", "$L/whiteouts.tar"],
                  layer: "$L/whiteouts.tar", keywords: ["digest mismatch"]),
        BadUnpack(label: "good layer then corrupt", args: ["$L/basic.tar.gz", "$L/corrupt.tar.gz"], layer: "$L/corrupt.tar.gz",
                  keywords: ["corrupt", "invalid"]),
        BadUnpack(label: "corrupt on stdin", args: ["-"], stdinLayer: "corrupt-crc.tar.gz", layer: "-",
                  keywords: ["checksum", "crc", "data check"]),
        BadUnpack(label: "breakout on stdin", args: ["$L/basic.tar", "-"], stdinLayer: "breakout-dotdot.tar", layer: "-",
                  entry: "../escaped", keywords: ["escapes"]),
    ]
}

/// A fixture layer that unpacks, with what the README says about it.
struct GoodLayer: Sendable, CustomTestStringConvertible {
    var file: String
    var compression: String
    var entries: Int
    var testDescription: String { file }

    static let all: [GoodLayer] = [
        GoodLayer(file: "basic.tar", compression: "none", entries: 22),
        GoodLayer(file: "basic.tar.gz", compression: "gzip", entries: 22),
        GoodLayer(file: "basic.tar.zst", compression: "zstd", entries: 22),
        GoodLayer(file: "basic-skippable.tar.zst", compression: "zstd", entries: 22),
        GoodLayer(file: "basic-multimember.tar.gz", compression: "gzip", entries: 22),
        GoodLayer(file: "trailing-garbage.tar", compression: "none", entries: 22),
        GoodLayer(file: "whiteouts.tar", compression: "none", entries: 6),
        GoodLayer(file: "empty.bin", compression: "none", entries: 0),
    ]
}

@Suite struct CLITests {
    // MARK: - Good layers

    @Test(.enabled(if: CLI.haveDigestTools, "needs sha256sum, gzip, zstd and bash"), arguments: GoodLayer.all)
    func unpackPrintsDigestsMatchingIndependentTools(_ layer: GoodLayer) throws {
        let tmp = TempDir()
        let file = CLI.layers + "/" + layer.file
        let dest = tmp.sub("dest")
        let r = try CLI.tool(["unpack", file, dest])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stderr.isEmpty)

        let blob = try CLI.sha256sum(file)
        let filter = CLI.decompressor(for: file)
        let diff = try CLI.sha256sum(file, through: filter)
        #expect(CLI.field("blob digest", in: r.stdout, layer: file) == blob)
        #expect(CLI.field("diffID", in: r.stdout, layer: file) == diff)
        #expect(CLI.field("compression", in: r.stdout, layer: file) == layer.compression)
        #expect(CLI.field("entries", in: r.stdout, layer: file) == String(layer.entries))
        let blobSize = try #require(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        let tarSize = try filter.map { try CLI.byteCount(file, through: $0) } ?? blobSize
        #expect(CLI.field("size", in: r.stdout, layer: file) == "\(blobSize) bytes stored, \(tarSize) bytes of tar")
        #expect(CLI.chainLine(r.stdout) == diff, "one layer: chainID = diffID")
        if filter == nil { #expect(blob == diff, "an uncompressed blob is its own diffID") }

        // Every encoding of basic.tar gives the tree basic.tar gives.
        if layer.file.hasPrefix("basic") || layer.file == "trailing-garbage.tar" {
            let reference = tmp.sub("reference")
            #expect(try CLI.tool(["unpack", CLI.layers + "/basic.tar", reference]).status == 0)
            let diffs = TreeSnapshot(reference).differences(from: TreeSnapshot(dest))
            #expect(diffs.isEmpty, "\(diffs.joined(separator: "\n"))")
        }
        #expect(CLI.listing(tmp.path).allSatisfy { !$0.contains(".layertool-") }, "staging dir left behind")
    }

    @Test func fixtureDigestsAgreeWithTheReadme() throws {
        // The README's busybox numbers, and what layertool computes for those blobs.
        let tmp = TempDir()
        let l1 = CLI.blobPath(CLI.busybox, CLI.busyboxLayer1)
        let l2 = CLI.blobPath(CLI.busybox, CLI.busyboxLayer2)
        let r = try CLI.tool(["unpack", "--json", l1, l2, tmp.sub("dest")])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let records = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        try #require(records.count == 2)
        #expect(records[0]["blobDigest"] as? String == CLI.busyboxLayer1)
        #expect(records[0]["diffID"] as? String == CLI.busyboxDiff1)
        #expect(records[0]["tarSize"] as? Int == 2_131_968)
        #expect(records[0]["entries"] as? Int == 284)
        #expect(records[1]["blobDigest"] as? String == CLI.busyboxLayer2)
        #expect(records[1]["diffID"] as? String == CLI.busyboxDiff2)
        #expect(records[1]["tarSize"] as? Int == 7168)
        #expect(records[1]["entries"] as? Int == 7)
        #expect(records[1]["chainID"] as? String == CLI.chain([CLI.busyboxDiff1, CLI.busyboxDiff2])[1])
    }

    @Test func basicTreeIsWhatTheReadmeDescribes() throws {
        let tmp = TempDir()
        let dest = tmp.sub("dest")
        let r = try CLI.tool(["unpack", CLI.layers + "/basic.tar.zst", dest])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let snap = TreeSnapshot(dest)
        let D = "directory-with-a-deliberately-long-name-dddddddddddddddddddd"
        let F = "file-with-a-deliberately-long-name-fffffffffffffffffffff.txt"
        var expected: Set<String> = [".", "café", "café/naïve.txt", "dev", "dev/loop0", "dev/null", "dir", "dir/empty", "dir/fifo",
                                     "dir/file.txt", "dir/hardlink", "dir/old-mtime", "dir/setuid", "dir/sub", "dir/sub/nested.txt",
                                     "dir/symlink", "home", "home/user", "home/user/owned.txt", "long", "long/\(D)", "long/\(D)/\(F)",
                                     "long/symlink-to-long-target"]
        if !isRoot { expected.subtract(["dev/loop0", "dev/null"]) }  // devices need privilege; skipped with a warning
        #expect(Set(snap.nodes.keys) == expected)
        #expect(snap.nodes["café/naïve.txt"]?.content == CLI.hex(Array("naïve café\n".utf8)))
        #expect(snap.nodes["dir/file.txt"]?.linkGroup != nil && snap.nodes["dir/file.txt"]?.linkGroup == snap.nodes["dir/hardlink"]?.linkGroup)
        #expect(snap.nodes["dir/symlink"]?.content == "file.txt")
        #expect(snap.nodes["long/symlink-to-long-target"]?.content == "\(D)/\(F)")
        #expect(snap.nodes["dir/old-mtime"]?.mtime == 1_000_000_000)
        #expect(snap.nodes["dir/file.txt"]?.mtime == 1_700_000_000)
        #expect(snap.nodes["dir/setuid"]?.mode == 0o4755)
        #expect(snap.nodes["dir/sub"]?.mode == 0o750)
        #expect(snap.nodes["dir/sub/nested.txt"]?.mode == 0o600)
        #expect(snap.nodes["home/user/owned.txt"]?.mode == 0o640)
        #expect(snap.nodes["dir/fifo"]?.type == "fifo")
        if isRoot {
            #expect(snap.nodes["dev/null"]?.type == "char" && snap.nodes["dev/null"]?.content == "1:3")
            #expect(snap.nodes["dev/loop0"]?.type == "block" && snap.nodes["dev/loop0"]?.content == "7:0")
            #expect(snap.nodes["home/user"]?.uid == 1000 && snap.nodes["home/user"]?.gid == 1000)
            #expect(snap.nodes["home/user/owned.txt"]?.uid == 1000 && snap.nodes["home/user/owned.txt"]?.gid == 1000)
        }
    }

    @Test func jsonOutputHasEveryFieldWithIndependentValues() throws {
        let tmp = TempDir()
        let gz = CLI.layers + "/basic.tar.gz", plain = CLI.layers + "/whiteouts.tar"
        let r = try CLI.tool(["unpack", "--json", gz, plain, tmp.sub("dest")])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let parsed = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        let records = try #require(parsed as? [[String: Any]], "--json prints an array of objects: \(r.stdout)")
        try #require(records.count == 2)
        let keys: Set<String> = ["layer", "blobDigest", "diffID", "chainID", "compression", "blobSize", "tarSize", "entries"]
        for rec in records { #expect(keys.isSubset(of: Set(rec.keys)), "keys: \(rec.keys.sorted())") }

        let diff0 = try CLI.sha256sum(gz, through: "gzip -dc"), diff1 = try CLI.sha256sum(plain)
        let chains = CLI.chain([diff0, diff1])
        #expect(records[0]["layer"] as? String == gz)
        #expect(records[0]["blobDigest"] as? String == (try CLI.sha256sum(gz)))
        #expect(records[0]["diffID"] as? String == diff0)
        #expect(records[0]["chainID"] as? String == chains[0])
        #expect(records[0]["compression"] as? String == "gzip")
        #expect(records[0]["blobSize"] as? Int == 741)
        #expect(records[0]["tarSize"] as? Int == (try CLI.byteCount(gz, through: "gzip -dc")))
        #expect(records[0]["entries"] as? Int == 22)
        #expect(records[1]["layer"] as? String == plain)
        #expect(records[1]["blobDigest"] as? String == diff1)
        #expect(records[1]["diffID"] as? String == diff1)
        #expect(records[1]["chainID"] as? String == chains[1])
        #expect(records[1]["compression"] as? String == "none")
        #expect(records[1]["blobSize"] as? Int == 4608)
        #expect(records[1]["tarSize"] as? Int == 4608)
        #expect(records[1]["entries"] as? Int == 6)
    }

    @Test func humanOutputPrintsTheChainIDOfTheStack() throws {
        let tmp = TempDir()
        let gz = CLI.layers + "/basic.tar.gz", plain = CLI.layers + "/whiteouts.tar"
        let r = try CLI.tool(["unpack", gz, plain, tmp.sub("dest")])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let chains = CLI.chain([try CLI.sha256sum(gz, through: "gzip -dc"), try CLI.sha256sum(plain)])
        #expect(CLI.chainLine(r.stdout) == chains[1])
    }

    @Test(arguments: ["basic.tar.zst", "basic.tar.gz", "basic.tar"])
    func dashReadsStandardInput(_ name: String) throws {
        let tmp = TempDir()
        let file = CLI.layers + "/" + name
        let data = try #require(FileManager.default.contents(atPath: file))
        let viaStdin = tmp.sub("stdin"), viaFile = tmp.sub("file")
        let r = try CLI.tool(["unpack", "--json", "-", viaStdin], stdin: data)
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let records = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        #expect(records.first?["layer"] as? String == "-")
        #expect(records.first?["blobDigest"] as? String == CLI.sha256(data))
        #expect(records.first?["diffID"] as? String == CLI.sha256(Data(ReferenceTar.tar(file))))
        #expect(try CLI.tool(["unpack", file, viaFile]).status == 0)
        let diffs = TreeSnapshot(viaFile).differences(from: TreeSnapshot(viaStdin))
        #expect(diffs.isEmpty, "\(diffs.joined(separator: "\n"))")
    }

    @Test func dashWithADigestIntoADestWithContent() throws {
        // A DEST with content takes the in-place path, which reads stdin twice (spooled).
        let tmp = TempDir()
        let dest = tmp.sub("dest")
        try CLI.populate(dest)
        let file = CLI.layers + "/basic.tar.gz"
        let data = try #require(FileManager.default.contents(atPath: file))
        let r = try CLI.tool(["unpack", "--digest", CLI.sha256(data), "-", dest], stdin: data)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(contents(ofFile: dest + "/dir/file.txt") == "hello, world\n", "the layer's file replaced the old one")
        #expect(contents(ofFile: dest + "/keep.txt") == "precious\n", "unrelated content stays")
        #expect(contents(ofFile: dest + "/dir/sub/nested.txt") == "nested\n")
    }

    @Test func inspectPrintsTheSameDigestsAndWritesNothing() throws {
        let tmp = TempDir()
        let files = ["basic.tar.gz", "basic.tar.zst", "whiteouts.tar"].map { CLI.layers + "/" + $0 }
        let cwdBefore = CLI.listing(tmp.path)
        let r = try CLI.tool(["inspect", "--json"] + files)
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let records = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        try #require(records.count == 3)
        for (rec, f) in zip(records, files) {
            #expect(rec["layer"] as? String == f)
            #expect(rec["blobDigest"] as? String == CLI.sha256(try #require(FileManager.default.contents(atPath: f))))
        }
        #expect(CLI.listing(tmp.path) == cwdBefore)
        let bad = try CLI.tool(["inspect", CLI.layers + "/breakout-dotdot.tar"])
        CLI.expectCleanError(bad, layer: CLI.layers + "/breakout-dotdot.tar", entry: "../escaped", reasonContainsOneOf: ["escapes"])
    }

    @Test func symlinkBreakoutsLandInsideTheRoot() throws {
        let tmp = TempDir()
        for name in ["breakout-symlink.tar", "breakout-symlink-relative.tar"] {
            #expect(lstatPath("/tmp/pwned") == nil, "/tmp/pwned exists before the test; cannot check")
            let dest = tmp.sub(name)
            let r = try CLI.tool(["unpack", CLI.layers + "/" + name, dest])
            CLI.expectNoCrash(r.stderr)
            #expect(lstatPath("/tmp/pwned") == nil, "\(name) wrote through the symlink onto the host")
            if r.status == 0 {
                #expect(contents(ofFile: dest + "/tmp/pwned") == "pwned\n", "\(name): the link is resolved inside the root")
            } else {
                CLI.expectCleanError(r, layer: CLI.layers + "/" + name, entry: "escape/pwned")
            }
        }
    }

    // MARK: - Bad input leaves DEST as it was

    @Test(arguments: BadUnpack.all, DestState.allCases)
    func badInputFailsWithOneLineAndLeavesDestAlone(_ bad: BadUnpack, _ state: DestState) throws {
        let tmp = TempDir()
        let parent = tmp.mkdir("out")
        let dest = parent + "/dest"
        switch state {
        case .missing: break
        case .empty: _ = tmp.mkdir("out/dest")
        case .populated: try CLI.populate(dest)
        }
        let before = CLI.strictSnapshot(parent)
        let stdin = try bad.stdinLayer.map { try #require(FileManager.default.contents(atPath: CLI.layers + "/" + $0)) }
        let r = try CLI.tool(["unpack"] + bad.args.map(bad.expand) + [dest], stdin: stdin)

        CLI.expectCleanError(r, layer: bad.expand(bad.layer), entry: bad.entry, reasonContainsOneOf: bad.keywords)
        #expect(lstatPath(tmp.path + "/escaped") == nil && lstatPath(parent + "/escaped") == nil, "a file escaped the root")
        switch state {
        case .missing:
            #expect(lstatPath(dest) == nil, "DEST was created")
            #expect(CLI.listing(parent) == [], "left behind: \(CLI.listing(parent))")
        case .empty, .populated:
            // The parent's mtime may change (a staging dir came and went beside an empty DEST).
            var after = CLI.strictSnapshot(parent)
            if state == .empty { after.nodes["."]?.mtime = before.nodes["."]?.mtime }
            let diffs = before.differences(from: after)
            #expect(diffs.isEmpty, "DEST changed:\n\(diffs.joined(separator: "\n"))")
        }
    }

    @Test(arguments: DestState.allCases)
    func malformedDigestFailsAndLeavesDestAlone(_ state: DestState) throws {
        let tmp = TempDir()
        let parent = tmp.mkdir("out")
        let dest = parent + "/dest"
        if state == .empty { _ = tmp.mkdir("out/dest") }
        if state == .populated { try CLI.populate(dest) }
        let before = CLI.strictSnapshot(parent)
        for digest in ["sha256:xyz", "md5:0123", "SHA256:" + String(repeating: "A", count: 64), "sha256:" + String(repeating: "0", count: 63)] {
            let r = try CLI.tool(["unpack", "--digest", digest, CLI.layers + "/basic.tar.gz", dest])
            #expect(r.status != 0, "\(digest) accepted")
            CLI.expectNoCrash(r.stderr)
            #expect(r.stderr.contains(digest), "the message quotes the bad value: \(r.stderr)")
        }
        #expect(before.differences(from: CLI.strictSnapshot(parent)).isEmpty)
    }

    @Test
    func malformedDigestIsReportedOnOneLineNamingTheLayer() throws {
        let tmp = TempDir()
        let layer = CLI.layers + "/basic.tar.gz"
        let r = try CLI.tool(["unpack", "--digest", "sha256:xyz", layer, tmp.sub("dest")])
        CLI.expectCleanError(r, layer: layer, reasonContainsOneOf: ["sha256:xyz"], status: nil)
    }

    // MARK: - OCI image layouts

    @Test func imageLayoutGivesTheReadmeTree() throws {
        let tmp = TempDir()
        let dest = tmp.sub("rootfs")
        let r = try CLI.tool(["unpack", "--json", "--image", CLI.busybox, dest])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let records = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        try #require(records.count == 2)
        #expect(records.map { $0["diffID"] as? String } == [CLI.busyboxDiff1, CLI.busyboxDiff2])
        #expect(records.map { $0["blobDigest"] as? String } == [CLI.busyboxLayer1, CLI.busyboxLayer2])
        #expect(records.map { $0["compression"] as? String } == ["gzip", "zstd"])
        #expect(records.last?["chainID"] as? String == CLI.chain([CLI.busyboxDiff1, CLI.busyboxDiff2]).last)
        if CLI.haveDigestTools {
            #expect(try CLI.sha256sum(CLI.blobPath(CLI.busybox, CLI.busyboxLayer1), through: "gzip -dc") == CLI.busyboxDiff1)
            #expect(try CLI.sha256sum(CLI.blobPath(CLI.busybox, CLI.busyboxLayer2), through: "zstd -dc") == CLI.busyboxDiff2)
        }

        let snap = TreeSnapshot(dest)
        let names = { (dir: String) in Set(snap.nodes.keys.filter { $0.hasPrefix(dir + "/") && !$0.dropFirst(dir.count + 1).contains("/") }.map { String($0.dropFirst(dir.count + 1)) }) }
        #expect(names("etc") == ["group", "hostname", "passwd", "removed-later", "xattr-file"])
        #expect(snap.nodes["etc/motd"] == nil)
        #expect(names("etc/removed-later") == ["kept"])
        #expect(contents(ofFile: dest + "/etc/removed-later/kept") == "kept from layer 2\n")
        #expect(contents(ofFile: dest + "/etc/hostname") == "layer2-host\n")
        #expect(contents(ofFile: dest + "/etc/passwd") == "root:x:0:0:root:/root:/bin/sh\n")
        #expect(contents(ofFile: dest + "/etc/group") == "root:x:0:\n")
        #expect(snap.nodes["etc/xattr-file"]?.xattrs["user.test"] == Array("hello".utf8))
        #expect(snap.nodes.keys.filter { $0.split(separator: "/").last!.hasPrefix(".wh.") }.isEmpty)
        #expect(Set(snap.nodes.keys.filter { !$0.contains("/") }) == [".", "bin", "etc", "root", "tmp", "usr", "var"])

        let busybox = try #require(lstatPath(dest + "/bin/busybox"))
        let hardlink = try #require(lstatPath(dest + "/usr/bin/busybox-hardlink"))
        #expect(busybox.st_ino == hardlink.st_ino && busybox.st_dev == hardlink.st_dev)
        #expect(busybox.st_nlink == 2)
        #expect(snap.nodes["bin/busybox"]?.size == 1_982_256)
        #expect(snap.nodes["bin/busybox"]?.mode == 0o755)
        #expect(snap.nodes["bin/busybox"]?.content == "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6")

        let bin = names("bin")
        #expect(bin.count == 269)
        let applets = bin.subtracting(["busybox"])
        #expect(applets.count == 268)
        #expect(applets.isSuperset(of: ["[", "[[", "sh"]))
        let wrong = applets.filter { snap.nodes["bin/" + $0]?.type != "symlink" || snap.nodes["bin/" + $0]?.content != "busybox" }
        #expect(wrong.isEmpty, "not symlinks to busybox: \(wrong.sorted())")

        #expect(snap.nodes["tmp"]?.mode == 0o1777)
        #expect(snap.nodes["root"]?.mode == 0o700)
        #expect(names("var").isEmpty)
        #expect(snap.nodes.filter { $0.key != "." && $0.value.type != "dir" && $0.value.mtime != 1_700_000_000 }.isEmpty)
        if isRoot {
            #expect(snap.nodes.filter { $0.value.uid != 0 || $0.value.gid != 0 }.isEmpty)
        }
        #expect(CLI.listing(tmp.path) == ["rootfs"], "staging dir left behind")
    }

    @Test func imageReferenceIsResolved() throws {
        let tmp = TempDir()
        let r = try CLI.tool(["unpack", "--image", CLI.busybox + ":latest", tmp.sub("a")])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let missing = try CLI.tool(["unpack", "--image", CLI.busybox + ":no-such-tag", tmp.sub("b")])
        CLI.expectCleanError(missing, layer: CLI.busybox, reasonContainsOneOf: ["no-such-tag"])
        #expect(lstatPath(tmp.sub("b")) == nil)
    }

    @Test(arguments: DestState.allCases)
    func tamperedLayerBlobFailsWithADigestError(_ state: DestState) throws {
        // Byte 4 is in the gzip header's MTIME field: the data still inflates to the same tar, so
        // only the blob digest can tell.
        let tmp = TempDir()
        let layout = tmp.sub("layout")
        try CLI.copyBusybox(to: layout)
        try CLI.flipByte(CLI.blobPath(layout, CLI.busyboxLayer1), at: 4)
        try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(CLI.busyboxLayer1)",
                               keywords: ["digest mismatch"], mentioning: CLI.busyboxLayer1)
    }

    @Test(arguments: DestState.allCases)
    func layerBlobWithCorruptDataFailsAndLeavesDestAlone(_ state: DestState) throws {
        // A flipped byte in the middle of the deflate data (layer 1) and in the zstd layer (2).
        for (digest, offset) in [(CLI.busyboxLayer1, 500_000), (CLI.busyboxLayer2, 150)] {
            let tmp = TempDir()
            let layout = tmp.sub("layout")
            try CLI.copyBusybox(to: layout)
            try CLI.flipByte(CLI.blobPath(layout, digest), at: offset)
            try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(digest)", keywords: [])
        }
    }

    @Test(arguments: DestState.allCases)
    func layerBlobWithCorruptDataIsReportedAsADigestMismatch(_ state: DestState) throws {
        for (digest, offset) in [(CLI.busyboxLayer1, 500_000), (CLI.busyboxLayer2, 150)] {
            let tmp = TempDir()
            let layout = tmp.sub("layout")
            try CLI.copyBusybox(to: layout)
            try CLI.flipByte(CLI.blobPath(layout, digest), at: offset)
            try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(digest)",
                                   keywords: ["digest mismatch"], mentioning: digest)
        }
    }

    @Test(arguments: DestState.allCases)
    func wrongDiffIDInTheConfigFailsWithADiffIDMismatch(_ state: DestState) throws {
        // Only the diffID is wrong: the config, manifest and index are re-hashed after the edit,
        // so every descriptor in the layout is consistent.
        let tmp = TempDir()
        let layout = tmp.sub("layout")
        try CLI.copyBusybox(to: layout)
        var index = try CLI.readJSON(layout + "/index.json")
        var manifests = try #require(index["manifests"] as? [[String: Any]])
        let manifestDigest = try #require(manifests.first?["digest"] as? String)
        var manifest = try CLI.readJSON(CLI.blobPath(layout, manifestDigest))
        var configDesc = try #require(manifest["config"] as? [String: Any])
        var config = try CLI.readJSON(CLI.blobPath(layout, try #require(configDesc["digest"] as? String)))
        var rootfs = try #require(config["rootfs"] as? [String: Any])
        var diffIDs = try #require(rootfs["diff_ids"] as? [String])
        try #require(diffIDs == [CLI.busyboxDiff1, CLI.busyboxDiff2])
        let wrong = CLI.sha256(Array("not the diffID".utf8))
        diffIDs[1] = wrong
        rootfs["diff_ids"] = diffIDs
        config["rootfs"] = rootfs
        let newConfig = try CLI.writeBlob(config, in: layout)
        configDesc["digest"] = newConfig.digest
        configDesc["size"] = newConfig.size
        manifest["config"] = configDesc
        let newManifest = try CLI.writeBlob(manifest, in: layout)
        manifests[0]["digest"] = newManifest.digest
        manifests[0]["size"] = newManifest.size
        index["manifests"] = manifests
        try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]).write(to: URL(fileURLWithPath: layout + "/index.json"))

        try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(CLI.busyboxLayer2)",
                               keywords: ["diffID mismatch"], mentioning: wrong)
    }

    /// Runs `unpack --image layout DEST` for a layout that must fail, and checks the error line
    /// and that DEST (in the given state) is as it was.
    private func expectImageFailure(layout: String, in tmp: TempDir, state: DestState, layer: String, keywords: [String],
                                    mentioning: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let parent = tmp.mkdir("out")
        let dest = parent + "/dest"
        if state == .empty { _ = tmp.mkdir("out/dest") }
        if state == .populated { try CLI.populate(dest) }
        let before = CLI.strictSnapshot(parent)
        let r = try CLI.tool(["unpack", "--image", layout, dest])
        CLI.expectCleanError(r, layer: layer, reasonContainsOneOf: keywords, sourceLocation: sourceLocation)
        if let mentioning {
            #expect(r.stderr.contains(mentioning), "the message should name \(mentioning): \(r.stderr)", sourceLocation: sourceLocation)
        }
        switch state {
        case .missing:
            #expect(lstatPath(dest) == nil, "DEST was created", sourceLocation: sourceLocation)
            #expect(CLI.listing(parent) == [], "left behind: \(CLI.listing(parent))", sourceLocation: sourceLocation)
        case .empty, .populated:
            var after = CLI.strictSnapshot(parent)
            if state == .empty { after.nodes["."]?.mtime = before.nodes["."]?.mtime }
            let diffs = before.differences(from: after)
            #expect(diffs.isEmpty, "DEST changed:\n\(diffs.joined(separator: "\n"))", sourceLocation: sourceLocation)
        }
    }
}

// MARK: - Small file helpers (named so as not to clash with other test files)

private func lstatPath(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

private func contents(ofFile path: String) -> String? {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
}

/// The uncompressed tar of a fixture layer, by the reference tools.
private enum ReferenceTar {
    static func tar(_ file: String) -> [UInt8] {
        guard let filter = CLI.decompressor(for: file) else { return Array(FileManager.default.contents(atPath: file) ?? Data()) }
        let r = try? run(CLI.bash, ["-c", "\(filter) < \"$1\" | base64 -w0", "bash", file])
        return Array(Data(base64Encoded: r?.stdout ?? "") ?? Data())
    }
}
