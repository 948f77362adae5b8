import Foundation
import LayerKit
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
    static let layers = fixturesDir + "/layers"

    /// The reference tools the digests are checked with.
    static let digestTools = Requirement.tools("sha256sum", "gzip", "zstd", "bash")

    /// `sha256:<hex>` of a file, or of what `filter` (e.g. `gzip -dc`) makes of it, by sha256sum.
    static func sha256sum(_ file: String, through filter: String? = nil) throws -> String {
        let out = try bash((filter.map { "\($0) < \"$1\"" } ?? "cat \"$1\"") + " | sha256sum", file)
        let hex = String(out.prefix(while: { !$0.isWhitespace }))
        try #require(hex.count == 64, "sha256sum printed \(out)")
        return "sha256:" + hex
    }

    /// Bytes that `filter` makes of a file (`wc -c`).
    static func byteCount(_ file: String, through filter: String) throws -> Int {
        try #require(Int(try bash("\(filter) < \"$1\" | wc -c", file).trimmingCharacters(in: .whitespacesAndNewlines)))
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

    /// Asserts the one-line error contract: exit 1 (any non-zero status when `status` is nil),
    /// exactly one stderr line `layertool: <layer>: [entry "<entry>": ]<reason>`, no crash report.
    static func expectCleanError(_ r: ProcessResult, layer: String, entry: String? = nil,
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
        try FileManager.default.createDirectory(atPath: dest + "/dir/sub", withIntermediateDirectories: true)
        createFile(dest + "/dir/file.txt", "not from the layer\n")
        createFile(dest + "/keep.txt", "precious\n")
        createFile(dest + "/dir/sub/nested.txt", "mine\n")
        createFile(dest + "/passwd", "x\n")
        try FileManager.default.createSymbolicLink(atPath: dest + "/link", withDestinationPath: "keep.txt")
        chmod(dest + "/dir/sub", 0o700)
        chmod(dest + "/keep.txt", 0o600)
        for p in ["/dir/file.txt", "/keep.txt", "/dir/sub/nested.txt", "/passwd", "/dir/sub", "/dir", ""] {
            setMtime(dest + p, 1_234_567_890)
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
        try FileManager.default.copyItem(atPath: BusyboxFixture.layout, toPath: dir)
    }

    static func flipByte(_ file: String, at offset: Int) throws {
        var data = try #require(FileManager.default.contents(atPath: file))
        let i = offset >= 0 ? offset : data.count + offset
        data[i] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: file))
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

    @Test(.requires(CLI.digestTools), arguments: GoodLayer.all)
    func unpackPrintsDigestsMatchingIndependentTools(_ layer: GoodLayer) throws {
        let tmp = TempDir()
        let file = CLI.layers + "/" + layer.file
        let dest = tmp.sub("dest")
        let r = try Layertool.run(["unpack", file, dest])
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
            #expect(try Layertool.run(["unpack", CLI.layers + "/basic.tar", reference]).status == 0)
            let diffs = TreeSnapshot(reference).differences(from: TreeSnapshot(dest))
            #expect(diffs.isEmpty, "\(diffs.joined(separator: "\n"))")
        }
        #expect(CLI.listing(tmp.path).allSatisfy { !$0.contains(".layertool-") }, "staging dir left behind")
    }

    @Test func fixtureDigestsAgreeWithTheReadme() throws {
        // The README's busybox numbers, and what layertool computes for those blobs.
        let tmp = TempDir()
        let l1 = BusyboxFixture.layerBlob(0), l2 = BusyboxFixture.layerBlob(1)
        let r = try Layertool.run(["unpack", "--json", l1, l2, tmp.sub("dest")])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let records = try r.json([LayertoolOutput.Layer].self)
        try #require(records.count == 2)
        #expect(records[0].blobDigest == BusyboxFixture.layerDigests[0])
        #expect(records[0].diffID == BusyboxFixture.diffIDs[0])
        #expect(records[0].tarSize == 2_131_968)
        #expect(records[0].entries == 284)
        #expect(records[1].blobDigest == BusyboxFixture.layerDigests[1])
        #expect(records[1].diffID == BusyboxFixture.diffIDs[1])
        #expect(records[1].tarSize == 7168)
        #expect(records[1].entries == 7)
        #expect(records[1].chainID == DigestOracle.chainIDs(BusyboxFixture.diffIDs)[1])
        #expect(records[1].chainID == BusyboxFixture.chainID)
        // Where each side of the pipeline waited: seconds, and no more than the run took.
        for record in records {
            let waits = try #require(record.stageWaits, "no stageWaits in \(record.layer)")
            #expect(waits.decoding >= 0 && waits.applying >= 0 && waits.decoding + waits.applying < 60)
        }
    }

    @Test func basicTreeIsWhatTheReadmeDescribes() throws {
        let tmp = TempDir()
        let dest = tmp.sub("dest")
        let r = try Layertool.run(["unpack", CLI.layers + "/basic.tar.zst", dest])
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
        #expect(snap.nodes["café/naïve.txt"]?.content == DigestOracle.hex(Array("naïve café\n".utf8)))
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
        let r = try Layertool.run(["unpack", "--json", gz, plain, tmp.sub("dest")])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let objects = try r.json([[String: JSONValue]].self)   // --json prints an array of objects
        try #require(objects.count == 2)
        let keys: Set<String> = ["layer", "blobDigest", "diffID", "chainID", "compression", "blobSize", "tarSize", "entries"]
        for rec in objects { #expect(keys.isSubset(of: Set(rec.keys)), "keys: \(rec.keys.sorted())") }
        let records = try r.json([LayertoolOutput.Layer].self)

        let diff0 = try CLI.sha256sum(gz, through: "gzip -dc"), diff1 = try CLI.sha256sum(plain)
        let chains = DigestOracle.chainIDs([diff0, diff1])
        #expect(records[0].layer == gz)
        #expect(records[0].blobDigest == (try CLI.sha256sum(gz)))
        #expect(records[0].diffID == diff0)
        #expect(records[0].chainID == chains[0])
        #expect(records[0].compression == "gzip")
        #expect(records[0].blobSize == 741)
        #expect(records[0].tarSize == Int64(try CLI.byteCount(gz, through: "gzip -dc")))
        #expect(records[0].entries == 22)
        #expect(records[1].layer == plain)
        #expect(records[1].blobDigest == diff1)
        #expect(records[1].diffID == diff1)
        #expect(records[1].chainID == chains[1])
        #expect(records[1].compression == "none")
        #expect(records[1].blobSize == 4608)
        #expect(records[1].tarSize == 4608)
        #expect(records[1].entries == 6)
    }

    @Test func humanOutputPrintsTheChainIDOfTheStack() throws {
        let tmp = TempDir()
        let gz = CLI.layers + "/basic.tar.gz", plain = CLI.layers + "/whiteouts.tar"
        let r = try Layertool.run(["unpack", gz, plain, tmp.sub("dest")])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let chains = DigestOracle.chainIDs([try CLI.sha256sum(gz, through: "gzip -dc"), try CLI.sha256sum(plain)])
        #expect(CLI.chainLine(r.stdout) == chains[1])
    }

    @Test(arguments: ["basic.tar.zst", "basic.tar.gz", "basic.tar"])
    func dashReadsStandardInput(_ name: String) throws {
        let tmp = TempDir()
        let file = CLI.layers + "/" + name
        let data = try #require(FileManager.default.contents(atPath: file))
        let viaStdin = tmp.sub("stdin"), viaFile = tmp.sub("file")
        let r = try Layertool.run(["unpack", "--json", "-", viaStdin], stdin: data)
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let records = try r.json([LayertoolOutput.Layer].self)
        #expect(records.first?.layer == "-")
        #expect(records.first?.blobDigest == DigestOracle.sha256(data))
        #expect(records.first?.diffID == DigestOracle.sha256(try ReferenceTar.tar(file)))
        #expect(try Layertool.run(["unpack", file, viaFile]).status == 0)
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
        let r = try Layertool.run(["unpack", "--digest", DigestOracle.sha256(data), "-", dest], stdin: data)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(contents(dest + "/dir/file.txt") == "hello, world\n", "the layer's file replaced the old one")
        #expect(contents(dest + "/keep.txt") == "precious\n", "unrelated content stays")
        #expect(contents(dest + "/dir/sub/nested.txt") == "nested\n")
    }

    @Test func inspectPrintsTheSameDigestsAndWritesNothing() throws {
        let tmp = TempDir()
        let files = ["basic.tar.gz", "basic.tar.zst", "whiteouts.tar"].map { CLI.layers + "/" + $0 }
        let cwdBefore = CLI.listing(tmp.path)
        let r = try Layertool.run(["inspect", "--json"] + files)
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let records = try r.json([LayertoolOutput.Layer].self)
        try #require(records.count == 3)
        for (rec, f) in zip(records, files) {
            #expect(rec.layer == f)
            #expect(rec.blobDigest == DigestOracle.sha256(try #require(FileManager.default.contents(atPath: f))))
        }
        #expect(CLI.listing(tmp.path) == cwdBefore)
        let bad = try Layertool.run(["inspect", CLI.layers + "/breakout-dotdot.tar"])
        CLI.expectCleanError(bad, layer: CLI.layers + "/breakout-dotdot.tar", entry: "../escaped", reasonContainsOneOf: ["escapes"])
    }

    @Test func symlinkBreakoutsLandInsideTheRoot() throws {
        let tmp = TempDir()
        for name in ["breakout-symlink.tar", "breakout-symlink-relative.tar"] {
            #expect(lstatOrNil("/tmp/pwned") == nil, "/tmp/pwned exists before the test; cannot check")
            let dest = tmp.sub(name)
            let r = try Layertool.run(["unpack", CLI.layers + "/" + name, dest])
            CLI.expectNoCrash(r.stderr)
            #expect(lstatOrNil("/tmp/pwned") == nil, "\(name) wrote through the symlink onto the host")
            if r.status == 0 {
                #expect(contents(dest + "/tmp/pwned") == "pwned\n", "\(name): the link is resolved inside the root")
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
        case .empty: tmp.mkdir("out/dest")
        case .populated: try CLI.populate(dest)
        }
        let before = CLI.strictSnapshot(parent)
        let stdin = try bad.stdinLayer.map { try #require(FileManager.default.contents(atPath: CLI.layers + "/" + $0)) }
        let r = try Layertool.run(["unpack"] + bad.args.map(bad.expand) + [dest], stdin: stdin)

        CLI.expectCleanError(r, layer: bad.expand(bad.layer), entry: bad.entry, reasonContainsOneOf: bad.keywords)
        #expect(lstatOrNil(tmp.path + "/escaped") == nil && lstatOrNil(parent + "/escaped") == nil, "a file escaped the root")
        switch state {
        case .missing:
            #expect(lstatOrNil(dest) == nil, "DEST was created")
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
        if state == .empty { tmp.mkdir("out/dest") }
        if state == .populated { try CLI.populate(dest) }
        let before = CLI.strictSnapshot(parent)
        for digest in ["sha256:xyz", "md5:0123", "SHA256:" + String(repeating: "A", count: 64), "sha256:" + String(repeating: "0", count: 63)] {
            let r = try Layertool.run(["unpack", "--digest", digest, CLI.layers + "/basic.tar.gz", dest])
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
        let r = try Layertool.run(["unpack", "--digest", "sha256:xyz", layer, tmp.sub("dest")])
        CLI.expectCleanError(r, layer: layer, reasonContainsOneOf: ["sha256:xyz"], status: nil)
    }

    // MARK: - OCI image layouts

    @Test(.requires(CLI.digestTools))
    func imageLayoutGivesTheReadmeTree() throws {
        let tmp = TempDir()
        let dest = tmp.sub("rootfs")
        let r = try Layertool.run(["unpack", "--json", "--image", BusyboxFixture.layout, dest])
        try #require(r.status == 0, "stderr: \(r.stderr)")
        let records = try r.json([LayertoolOutput.Layer].self)
        try #require(records.count == 2)
        #expect(records.map(\.diffID) == BusyboxFixture.diffIDs)
        #expect(records.map(\.blobDigest) == BusyboxFixture.layerDigests)
        #expect(records.map(\.compression) == ["gzip", "zstd"])
        #expect(records.last?.chainID == DigestOracle.chainIDs(BusyboxFixture.diffIDs).last)
        #expect(try CLI.sha256sum(BusyboxFixture.layerBlob(0), through: "gzip -dc") == BusyboxFixture.diffIDs[0])
        #expect(try CLI.sha256sum(BusyboxFixture.layerBlob(1), through: "zstd -dc") == BusyboxFixture.diffIDs[1])

        let snap = TreeSnapshot(dest)
        let names = { (dir: String) in Set(snap.nodes.keys.filter { $0.hasPrefix(dir + "/") && !$0.dropFirst(dir.count + 1).contains("/") }.map { String($0.dropFirst(dir.count + 1)) }) }
        #expect(names("etc") == ["group", "hostname", "passwd", "removed-later", "xattr-file"])
        #expect(snap.nodes["etc/motd"] == nil)
        #expect(names("etc/removed-later") == ["kept"])
        #expect(contents(dest + "/etc/removed-later/kept") == "kept from layer 2\n")
        #expect(contents(dest + "/etc/hostname") == "layer2-host\n")
        #expect(contents(dest + "/etc/passwd") == "root:x:0:0:root:/root:/bin/sh\n")
        #expect(contents(dest + "/etc/group") == "root:x:0:\n")
        #expect(snap.nodes["etc/xattr-file"]?.xattrs["user.test"] == Array("hello".utf8))
        #expect(snap.nodes.keys.filter { $0.split(separator: "/").last!.hasPrefix(".wh.") }.isEmpty)
        #expect(Set(snap.nodes.keys.filter { !$0.contains("/") }) == [".", "bin", "etc", "root", "tmp", "usr", "var"])

        let busybox = try #require(lstatOrNil(dest + "/bin/busybox"))
        let hardlink = try #require(lstatOrNil(dest + "/usr/bin/busybox-hardlink"))
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
        let r = try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":latest", tmp.sub("a")])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let missing = try Layertool.run(["unpack", "--image", BusyboxFixture.layout + ":no-such-tag", tmp.sub("b")])
        CLI.expectCleanError(missing, layer: BusyboxFixture.layout, reasonContainsOneOf: ["no-such-tag"])
        #expect(lstatOrNil(tmp.sub("b")) == nil)
    }

    @Test(arguments: DestState.allCases)
    func tamperedLayerBlobFailsWithADigestError(_ state: DestState) throws {
        // Byte 4 is in the gzip header's MTIME field: the data still inflates to the same tar, so
        // only the blob digest can tell.
        let tmp = TempDir()
        let layout = tmp.sub("layout")
        try CLI.copyBusybox(to: layout)
        try CLI.flipByte(TestLayout.blobPath(layout, BusyboxFixture.layerDigests[0]), at: 4)
        try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(BusyboxFixture.layerDigests[0])",
                               keywords: ["digest mismatch"], mentioning: BusyboxFixture.layerDigests[0])
    }

    @Test(arguments: DestState.allCases)
    func layerBlobWithCorruptDataFailsAndLeavesDestAlone(_ state: DestState) throws {
        // A flipped byte in the middle of the deflate data (layer 1) and in the zstd layer (2).
        for (digest, offset) in [(BusyboxFixture.layerDigests[0], 500_000), (BusyboxFixture.layerDigests[1], 150)] {
            let tmp = TempDir()
            let layout = tmp.sub("layout")
            try CLI.copyBusybox(to: layout)
            try CLI.flipByte(TestLayout.blobPath(layout, digest), at: offset)
            try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(digest)", keywords: [])
        }
    }

    @Test(arguments: DestState.allCases)
    func layerBlobWithCorruptDataIsReportedAsADigestMismatch(_ state: DestState) throws {
        for (digest, offset) in [(BusyboxFixture.layerDigests[0], 500_000), (BusyboxFixture.layerDigests[1], 150)] {
            let tmp = TempDir()
            let layout = tmp.sub("layout")
            try CLI.copyBusybox(to: layout)
            try CLI.flipByte(TestLayout.blobPath(layout, digest), at: offset)
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
        // Edited as JSONValue, so every other field of the three documents stays as it was.
        var index = try JSON.read([String: JSONValue].self, file: layout + "/index.json")
        var manifests = try #require(index["manifests"]?.objects)
        let manifestDigest = try #require(manifests.first?["digest"]?.string)
        var manifest = try JSON.read([String: JSONValue].self, file: TestLayout.blobPath(layout, manifestDigest))
        var configDesc = try #require(manifest["config"]?.object)
        var config = try JSON.read([String: JSONValue].self,
                                   file: TestLayout.blobPath(layout, try #require(configDesc["digest"]?.string)))
        var rootfs = try #require(config["rootfs"]?.object)
        var diffIDs = try #require(rootfs["diff_ids"]?.strings)
        try #require(diffIDs == BusyboxFixture.diffIDs)
        let wrong = DigestOracle.sha256(Array("not the diffID".utf8))
        diffIDs[1] = wrong
        rootfs["diff_ids"] = .array(diffIDs.map(JSONValue.string))
        config["rootfs"] = .object(rootfs)
        let newConfig = try TestLayout.writeJSONBlob(config, in: layout)
        configDesc["digest"] = .string(newConfig.digest)
        configDesc["size"] = .integer(Int64(newConfig.size))
        manifest["config"] = .object(configDesc)
        let newManifest = try TestLayout.writeJSONBlob(manifest, in: layout)
        manifests[0]["digest"] = .string(newManifest.digest)
        manifests[0]["size"] = .integer(Int64(newManifest.size))
        index["manifests"] = .array(manifests.map(JSONValue.object))
        try JSON.write(index, to: layout + "/index.json")

        try expectImageFailure(layout: layout, in: tmp, state: state, layer: "\(layout)@\(BusyboxFixture.layerDigests[1])",
                               keywords: ["diffID mismatch"], mentioning: wrong)
    }

    /// Runs `unpack --image layout DEST` for a layout that must fail, and checks the error line
    /// and that DEST (in the given state) is as it was.
    private func expectImageFailure(layout: String, in tmp: TempDir, state: DestState, layer: String, keywords: [String],
                                    mentioning: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let parent = tmp.mkdir("out")
        let dest = parent + "/dest"
        if state == .empty { tmp.mkdir("out/dest") }
        if state == .populated { try CLI.populate(dest) }
        let before = CLI.strictSnapshot(parent)
        let r = try Layertool.run(["unpack", "--image", layout, dest])
        CLI.expectCleanError(r, layer: layer, reasonContainsOneOf: keywords, sourceLocation: sourceLocation)
        if let mentioning {
            #expect(r.stderr.contains(mentioning), "the message should name \(mentioning): \(r.stderr)", sourceLocation: sourceLocation)
        }
        switch state {
        case .missing:
            #expect(lstatOrNil(dest) == nil, "DEST was created", sourceLocation: sourceLocation)
            #expect(CLI.listing(parent) == [], "left behind: \(CLI.listing(parent))", sourceLocation: sourceLocation)
        case .empty, .populated:
            var after = CLI.strictSnapshot(parent)
            if state == .empty { after.nodes["."]?.mtime = before.nodes["."]?.mtime }
            let diffs = before.differences(from: after)
            #expect(diffs.isEmpty, "DEST changed:\n\(diffs.joined(separator: "\n"))", sourceLocation: sourceLocation)
        }
    }
}

/// The uncompressed tar of a fixture layer, by the reference tools.
private enum ReferenceTar {
    static func tar(_ file: String) throws -> [UInt8] {
        guard let filter = CLI.decompressor(for: file) else {
            return Array(try #require(FileManager.default.contents(atPath: file), "cannot read \(file)"))
        }
        let encoded = try bash("\(filter) < \"$1\" | base64 -w0", file)
        return Array(try #require(Data(base64Encoded: encoded), "\(filter) of \(file) did not come back as base64"))
    }
}
