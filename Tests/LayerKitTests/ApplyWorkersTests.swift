import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Files created by worker threads (`ApplyOptions.applyWorkers`) give the tree, the warnings and
/// the failures a serial apply gives, whatever the archive does in between (replacing what it
/// just wrote, hardlinking it, whiting it out, writing below it), and the bytes counted while
/// applying are what a walk of the result measures.
@Suite(.requires(.root(because: "files owned by uids 1 and 2, and an overlay-format layer: trusted.* xattrs and whiteout devices")))
struct ApplyWorkersTests {
    struct Case: CustomStringConvertible {
        var description: String
        var layers: [[TarEntry]]
        /// Whether the apply of the last layer can count the bytes it takes (nothing removed).
        var counts: Bool
        var overlay = false
    }

    static func many(_ prefix: String, dirs: Int, files: Int, seed: Int) -> [TarEntry] {
        var entries = [TarEntry]()
        for d in 0..<dirs {
            entries.append(.dir("\(prefix)d\(d)", mode: d % 3 == 0 ? 0o750 : 0o755))
            for f in 0..<files {
                let n = (d * 131 + f * 17 + seed) % 97
                var file = TarEntry.file("\(prefix)d\(d)/f\(f)", String(repeating: "x\(n)", count: n * 20),
                                         mode: n % 11 == 0 ? 0o4755 : 0o644, uid: Int64(n % 3), gid: Int64(n % 5))
                file.mtimeNsec = n * 1000
                if n % 13 == 0 { file.xattrs = [("user.n", Array("\(n)".utf8))] }
                entries.append(file)
            }
        }
        return entries
    }

    static let big = String(repeating: "0123456789abcdef", count: 20_000)   // 320,000 bytes: past the pool's size limit

    static let cases: [Case] = [
        Case(description: "many files in many dirs, a few large ones among them",
             layers: [many("", dirs: 30, files: 40, seed: 1) + [.file("d3/large", big), .file("d7/large", big)] + many("more/", dirs: 5, files: 30, seed: 2)],
             counts: true),
        Case(description: "later entries replace what the layer just wrote",
             layers: [many("", dirs: 3, files: 30, seed: 3) + [
                .file("d0/f1", "second version"), .symlink("d0/f2", "f1"), .dir("d0/f3"), .file("d0/f3/inside", "below a replaced file"),
                .file("d1", "a file over a dir full of files"), .file("d2/f4", "once more"), .file("d2/f4", "and again"),
             ]],
             counts: false),
        Case(description: "hardlinks to files written just before",
             layers: [many("", dirs: 4, files: 25, seed: 4) + [.hardlink("d0/link", "d0/f3"), .hardlink("d3/link", "d1/f24"), .file("d2/after", "z")]],
             counts: true),
        Case(description: "parents no entry names, and a symlinked parent",
             layers: [[.file("deep/a/b/c/f1", "1"), .file("deep/a/b/c/f2", "2"), .file("deep/a/x/f3", "3"), .dir("real"),
                       .symlink("link", "real")] + (0..<60).map { .file("link/f\($0)", String(repeating: "s", count: $0 * 30)) }],
             counts: true),
        Case(description: "names written again through a symlinked dir, then by their own path",
             layers: [many("", dirs: 2, files: 20, seed: 9) + [.symlink("alias", "/d0"), .file("alias/f3", "through the link"),
                                                              .file("d0/f3", "by its own path"), .file("alias/f4", "4"), .file("d0/f5", "5")]
                      + many("later/", dirs: 2, files: 20, seed: 10)],
             counts: false),
        Case(description: "whiteouts of this layer's own files and an opaque dir, plain format",
             layers: [many("", dirs: 2, files: 10, seed: 5), many("", dirs: 3, files: 20, seed: 6) + [.whiteout("d0", "f2"), .opaque("d1"), .file("d1/new", "n")]],
             counts: false),
        Case(description: "a file then an entry below it fails the same way",
             layers: [many("", dirs: 2, files: 20, seed: 7) + [.file("d0/f5/below", "cannot")]],
             counts: false),
        Case(description: "overlay format on a lower layer: parents copied up, whiteouts, opaque dirs",
             layers: [many("", dirs: 4, files: 15, seed: 8),
                      (0..<40).map { .file("d\($0 % 4)/new\($0)", "n\($0)") } + [.whiteout("d2", "f3"), .opaque("d3"), .file("d3/only", "o"),
                                                                                     .file("fresh/a/b", "implied parents")]],
             counts: true, overlay: true),
    ]

    /// Applies the case's layers into a fresh tree: all but the last with the default options, the
    /// last with `workers`; returns the tree, the last summary or the failure's description.
    static func apply(_ c: Case, workers: Int, in tmp: TempDir) throws -> (root: String, outcome: Result<LayerSummary, LayerError>) {
        let root = tmp.mkdir("w\(workers)-\(abs(c.description.hashValue))")
        var lowers = [String]()
        var result: Result<LayerSummary, LayerError>!
        for (i, entries) in c.layers.enumerated() {
            let target = c.overlay ? tmp.mkdir("\(URL(fileURLWithPath: root).lastPathComponent)-layer\(i)") : root
            let blob = tmp.sub("\(URL(fileURLWithPath: root).lastPathComponent).\(i).tar")
            TarBuilder.write(entries, to: blob)
            var options = c.overlay ? ApplyOptions(format: .overlay(.trusted), lowerDirs: lowers.reversed()) : ApplyOptions()
            options.applyWorkers = i == c.layers.count - 1 ? workers : 0
            let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            defer { close(fd) }
            do throws(LayerError) {
                result = .success(try LayerApplier(options: options).apply(.path(blob), rootFD: fd, name: "layer \(i)"))
            } catch {
                result = .failure(error)
            }
            lowers.append(target)
        }
        return (c.overlay ? lowers.last! : root, result)
    }

    /// An archive that ends inside a file's data: with or without workers the apply fails the
    /// same way and leaves the same tree, with no partial file under the entry's name (the serial
    /// path left the bytes it had; found by the apply fuzz target).
    @Test func anArchiveEndingInsideAFileLeavesNoPartialFile() throws {
        let tmp = TempDir("workers-truncated")
        let full = TarBuilder.build([.dir("d"), .file("d/before", "kept"), .file("d/cut", String(repeating: "z", count: 6000))])
        let cut = Array(full.prefix(512 * 5 + 2048))   // inside d/cut's data, whatever PAX headers come first
        let blob = tmp.sub("cut.tar")
        createFile(blob, bytes: Data(cut))
        var trees = [TreeSnapshot](), errors = [String]()
        for workers in [0, 1, 2] {
            let root = tmp.mkdir("w\(workers)")
            var options = ApplyOptions()
            options.applyWorkers = workers
            do throws(LayerError) {
                _ = try LayerApplier(options: options).apply(.path(blob), to: root)
                Issue.record("\(workers) workers: a truncated archive was applied")
            } catch {
                errors.append(error.description.replacing(root, with: "ROOT"))
            }
            #expect(access(root + "/d/cut", F_OK) != 0, "\(workers) workers: a partial d/cut is left")
            trees.append(TreeSnapshot(root))
        }
        #expect(Set(errors).count == 1, "\(errors)")
        #expect(trees[1] == trees[0] && trees[2] == trees[0], "\(trees[0].differences(from: trees[1]))")
    }

    @Test(arguments: cases)
    func workersGiveTheSerialTree(_ c: Case) throws {
        let tmp = TempDir("workers")
        let serial = try Self.apply(c, workers: 0, in: tmp)
        // A dir no entry names (the root, implied parents) takes the time it was made at: not compared.
        let named = Set(c.layers.joined().filter { $0.kind == .dir }.map(\.path))
        func snapshot(_ root: String) -> TreeSnapshot {
            var tree = TreeSnapshot(root, options: .init(mtimes: true, dirMtimes: true))
            for (path, node) in tree.nodes where node.type == "dir" && !named.contains(path) { tree.nodes[path]?.mtime = nil }
            return tree
        }
        let serialTree = snapshot(serial.root)
        for workers in [1, 2] {
            let parallel = try Self.apply(c, workers: workers, in: tmp)
            switch (serial.outcome, parallel.outcome) {
            case (.success(let a), .success(let b)):
                #expect(a == b, "\(workers) workers: the summary differs")
                #expect(a.warnings == b.warnings, "\(workers) workers: warnings in another order")
                let tree = snapshot(parallel.root)
                #expect(tree == serialTree, "\(workers) workers: \(serialTree.differences(from: tree))")
            case (.failure(let a), .failure(let b)):
                #expect(a.description == b.description, "\(workers) workers fail otherwise")
            default:
                Issue.record("serial: \(serial.outcome), \(workers) workers: \(parallel.outcome)")
            }
        }
    }

    @Test(arguments: cases)
    func bytesCountedWhileApplyingAreWhatTheTreeTakes(_ c: Case) throws {
        let tmp = TempDir("allocated")
        for workers in [0, 1, 2] {
            let applied = try Self.apply(c, workers: workers, in: tmp)
            guard case .success(let summary) = applied.outcome else { continue }
            if c.counts {
                let counted = try #require(summary.allocatedBytes, "\(workers) workers: the apply did not count")
                #expect(counted == (try DiskUsage.of(applied.root)), "\(workers) workers")
            } else {
                #expect(summary.allocatedBytes == nil, "\(workers) workers: counted across a removal")
            }
        }
        // A target with content is never counted (its old entries are not the layer's).
        let root = tmp.mkdir("with-content")
        createFile(root + "/old", "old")
        let blob = tmp.sub("plain.tar")
        TarBuilder.write([.file("new", "n")], to: blob)
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(fd) }
        #expect(try LayerApplier().apply(.path(blob), rootFD: fd, name: "plain").allocatedBytes == nil)
    }
}
