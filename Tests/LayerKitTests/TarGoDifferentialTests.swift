import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

// Go's archive/tar reader itself against LayerKit: the same verdict for every archive of the
// corpus, for archives Go's writer and the peer tools wrote, and for random header mutations.

@Suite(.requires(.tools("go")))   // Debian's golang-go builds the archive/tar oracle
struct TarGoDifferentialTests {

    /// Archives written by Go's tar.Writer, GNU tar, bsdtar and Python's tarfile: Go reads each,
    /// LayerKit validates and unpacks each, the 9 GiB sparse file with its holes and data in place.
    @Test(.requires(PeerArchives.requirements))
    func peerArchivesAreReadByBoth() throws {
        let oracle = try GoTarOracle()
        let tmp = TempDir("tar-peers")
        var archives = try oracle.writeSamples(into: tmp.path)
        let peers = try PeerArchives.make(in: tmp.mkdir("peers"))
        #expect(peers.count == 11, "\(peers)")
        archives += peers
        let go = try oracle.verdicts(archives)
        for (archive, goError) in zip(archives, go) {
            let name = (archive as NSString).lastPathComponent
            #expect(goError == nil, "Go refuses \(name): \(goError ?? "")")
            if let error = TarStrictnessTests.inspect(archive, validate: true) { Issue.record("\(name): \(error)") }
            let out = tmp.sub("out-" + name)
            do throws(LayerError) {
                _ = try Unpacker().unpack([LayerInput(source: .path(archive))], to: out)
            } catch {
                Issue.record("unpack \(name): \(error)")
                continue
            }
            if FileManager.default.fileExists(atPath: out + "/sparse") {
                // 9 GiB with "middle" at 4 GiB and "end" at the end, the rest holes.
                let fd = open(out + "/sparse", O_RDONLY)
                defer { close(fd) }
                var st = stat()
                fstat(fd, &st)
                #expect(st.st_size == 9 << 30, "\(name)")
                #expect(st.st_blocks < 1024, "\(name): the holes were written")
                var buffer = [UInt8](repeating: 0, count: 6)
                #expect(pread(fd, &buffer, 6, 4 << 30) == 6 && buffer == Array("middle".utf8), "\(name)")
                #expect(pread(fd, &buffer, 3, (9 << 30) - 3) == 3 && buffer.prefix(3) == Array("end".utf8)[...], "\(name)")
            }
            if FileManager.default.fileExists(atPath: out + "/dir/file") {
                #expect(try String(contentsOfFile: out + "/dir/file", encoding: .utf8) == (name.hasPrefix("go-") ? "data\n" : "hello\n"), "\(name)")
            }
        }
    }

    /// Go and LayerKit over the corpus, the peer archives and 300 random mutations: the same
    /// answer for each (an apply refuses exactly what inspect refuses).
    @Test func sameAnswersAsGo() throws {
        let oracle = try GoTarOracle()
        let tmp = TempDir("tar-differential")
        var cases: [(name: String, path: String, verdict: TarVerdict?)] = []
        for (i, c) in TarCorpus.all.enumerated() {
            cases.append((c.name, TarStrictnessTests.write(c.bytes, to: tmp.sub("case-\(i).tar")), c.verdict))
        }
        for (i, m) in TarMutations.generate(count: 300).enumerated() {
            cases.append((m.name, TarStrictnessTests.write(m.bytes, to: tmp.sub("mutation-\(i).tar")), nil))
        }
        for (i, path) in try oracle.writeSamples(into: tmp.mkdir("go")).enumerated() {
            cases.append(("Go writer \(i)", path, .accept))
        }
        let go = try oracle.verdicts(cases.map(\.path))
        var counts = (bothRead: 0, bothRefused: 0, ambiguous: 0)
        for (c, goError) in zip(cases, go) {
            let lk = TarStrictnessTests.inspect(c.path)
            let label = "\(c.name): Go \(goError ?? "reads it"), LayerKit \(lk?.description ?? "reads it")"
            // The apply: into a new dir, which must not exist after a refusal.
            let out = tmp.sub("out")
            var applyError: LayerError?
            do throws(LayerError) { _ = try Unpacker().unpack([LayerInput(source: .path(c.path))], to: out) } catch { applyError = error }
            try? FileManager.default.removeItem(atPath: out)
            let applyCorrupt = applyError?.kind == .corruptArchive

            switch (goError, lk) {
            case (nil, nil):
                counts.bothRead += 1
                #expect(!applyCorrupt, "\(label); the apply refuses it: \(applyError!)")
            case (.some, .some(let error)):
                counts.bothRefused += 1
                #expect(error.kind == .corruptArchive, "\(label)")
                #expect(applyCorrupt, "\(label); the apply gives \(applyError.map { "\($0)" } ?? "success")")
            case (.some, nil):
                Issue.record("\(label): LayerKit reads what Go refuses")
            case (nil, .some(let error)):
                counts.ambiguous += 1
                #expect(error.reason.hasPrefix("tar: ambiguous"), "\(label): LayerKit refuses what Go reads")
                #expect(applyCorrupt, "\(label); the apply gives \(applyError.map { "\($0)" } ?? "success")")
            }
            switch c.verdict {
            case .accept?: #expect(goError == nil && lk == nil, "\(label): expected to be read by both")
            case .reject?: #expect(goError != nil, "\(label): expected Go to refuse it")
            case .ambiguous?: #expect(goError == nil && lk?.reason.hasPrefix("tar: ambiguous") == true, "\(label): expected ambiguous")
            case nil: break
            }
            #expect(!FileManager.default.fileExists(atPath: out))
        }
        print("TarGoDifferentialTests: \(cases.count) archives: \(counts.bothRead) read by both, \(counts.bothRefused) refused by both, \(counts.ambiguous) read by Go and refused by LayerKit as ambiguous")
    }
}
