import CArchive
import Crypto
import Foundation
import Testing
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// LayerKit reads a tar stream the way Go's `archive/tar` (containerd, Docker, umoci) does: what
/// Go refuses is refused, and what Go and libarchive would read two ways is refused too (see
/// `TarValidator`).
///
/// - Every rule: an archive breaking it (written byte by byte, `TarCorpus`) is refused with one
///   line naming the reason, by `inspect` and by an unpack, which leaves its destination as it
///   was (missing, or holding what it held); the same archive gzipped is refused the same way.
/// - Archives on the accepting side of each rule, and archives written by GNU tar, bsdtar,
///   Python's tarfile and Go's tar.Writer (sparse files, long names, xattrs, base-256 ids and
///   sizes), are read, by LayerKit and by Go.
/// - The differential test runs Go's reader itself (`Tests/go-tar-oracle`, built offline with
///   Debian's `go`) and LayerKit over the whole corpus plus a few hundred random mutations of
///   header bytes (fixed seed), and requires the same answer for every archive: refused by both,
///   or read by both, or read by Go and refused by LayerKit as ambiguous.
@Suite struct TarStrictnessTests {

    // MARK: - Helpers

    /// LayerKit's answer for a blob: nil when read, else the error.
    static func inspect(_ path: String, validate: Bool = false) -> LayerError? {
        do throws(LayerError) {
            _ = try LayerApplier().inspect(.path(path), validate: validate)
            return nil
        } catch {
            return error
        }
    }

    static func write(_ bytes: [UInt8], to path: String) -> String {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    /// The bytes gzipped (libarchive's raw format writer with its gzip filter).
    static func gzip(_ bytes: [UInt8]) -> [UInt8] {
        let a = archive_write_new()!
        defer { archive_write_free(a) }
        archive_write_set_format_raw(a)
        archive_write_add_filter_gzip(a)
        archive_write_set_bytes_in_last_block(a, 1)
        let box = Unmanaged.passRetained(TarBuilder.OutputBox())
        defer { box.release() }
        archive_write_open(a, box.toOpaque(), nil, { _, client, buffer, length in
            Unmanaged<TarBuilder.OutputBox>.fromOpaque(client!).takeUnretainedValue().bytes
                .append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: length))
            return length
        }, nil)
        let entry = archive_entry_new()!
        defer { archive_entry_free(entry) }
        archive_entry_set_filetype(entry, 0o100000)
        archive_entry_set_size(entry, la_int64_t(bytes.count))
        archive_write_header(a, entry)
        if !bytes.isEmpty { bytes.withUnsafeBytes { _ = archive_write_data(a, $0.baseAddress, $0.count) } }
        archive_write_close(a)
        return box.takeUnretainedValue().bytes
    }

    /// Names in `dir` that start with `.` (the unpacker's staging dirs beside a destination).
    static func hiddenNames(in dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix(".") }
    }

    // MARK: - Every rule, refused with one line, nothing written

    @Test("refused with one line; the destination is left as it was",
          arguments: TarCorpus.rejected + TarCorpus.ambiguous)
    func refused(_ testCase: TarCase) throws {
        let tmp = TempDir("tar-strict")
        let expected: [String]
        switch testCase.verdict {
        case .reject(let detail): expected = [detail]
        case .ambiguous(let detail): expected = ["tar: ambiguous", detail]
        case .accept: Issue.record("not a refused case"); return
        }
        func check(_ error: LayerError?, _ how: String, layer: String) {
            guard let error else { Issue.record("\(how): \(testCase.name) was read"); return }
            #expect(error.kind == .corruptArchive, "\(how): \(error)")
            #expect(error.reason.hasPrefix("tar: "), "\(how): \(error)")
            for part in expected { #expect(error.description.contains(part), "\(how): \(error)") }
            #expect(!error.description.contains("\n"), "\(how): more than one line: \(error)")
            #expect(error.description.hasPrefix(layer), "\(how): the layer is not named: \(error)")
        }

        for (label, bytes) in [("tar", testCase.bytes), ("tar.gz", Self.gzip(testCase.bytes))] {
            let layer = Self.write(bytes, to: tmp.sub("layer.\(label)"))
            check(Self.inspect(layer), "inspect \(label)", layer: layer)
            check(Self.inspect(layer, validate: true), "inspect --validate \(label)", layer: layer)

            // A destination that does not exist is not created.
            let fresh = tmp.sub("fresh-\(label)")
            do throws(LayerError) {
                _ = try Unpacker().unpack([LayerInput(source: .path(layer))], to: fresh)
                check(nil, "unpack to a new dir \(label)", layer: layer)
            } catch {
                check(error, "unpack to a new dir \(label)", layer: layer)
            }
            #expect(!FileManager.default.fileExists(atPath: fresh), "\(label): the destination was created")

            // A destination with content keeps exactly that content.
            let full = tmp.mkdir("full-\(label)")
            try "kept\n".write(toFile: full + "/kept", atomically: false, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: full + "/dir", withIntermediateDirectories: false)
            try "also kept\n".write(toFile: full + "/dir/file", atomically: false, encoding: .utf8)
            let before = TreeSnapshot(full, options: .init(dirMtimes: true))
            do throws(LayerError) {
                _ = try Unpacker().unpack([LayerInput(source: .path(layer))], to: full)
                check(nil, "unpack onto content \(label)", layer: layer)
            } catch {
                check(error, "unpack onto content \(label)", layer: layer)
            }
            let after = TreeSnapshot(full, options: .init(dirMtimes: true))
            #expect(after == before, "\(label): the destination changed: \(after.differences(from: before))")
        }
        #expect(Self.hiddenNames(in: tmp.path).isEmpty, "staging dirs left: \(Self.hiddenNames(in: tmp.path))")
    }

    @Test("read, and unpacked", arguments: TarCorpus.accepted)
    func accepted(_ testCase: TarCase) throws {
        let tmp = TempDir("tar-strict")
        for (label, bytes) in [("tar", testCase.bytes), ("tar.gz", Self.gzip(testCase.bytes))] {
            let layer = Self.write(bytes, to: tmp.sub("layer.\(label)"))
            if let error = Self.inspect(layer) { Issue.record("inspect \(label): \(error)") }
            if let error = Self.inspect(layer, validate: true) { Issue.record("inspect --validate \(label): \(error)") }
            do throws(LayerError) {
                let summaries = try Unpacker().unpack([LayerInput(source: .path(layer))], to: tmp.sub("out-\(label)"))
                // The diffID is the digest of every byte of the tar, trailing ones included (and
                // not of the padding given to libarchive when the last entry lacks it).
                let expected = "sha256:" + SHA256.hash(data: Data(testCase.bytes)).map { String(format: "%02x", $0) }.joined()
                #expect(summaries.first?.diffID.description == expected)
            } catch {
                Issue.record("unpack \(label): \(error)")
            }
        }
    }

    /// Issue 10, item 10: a PAX record whose length is wrong was skipped and its entry extracted.
    @Test func layertoolRefusesAWrongPAXLengthInOneLine() throws {
        let binary = ProcessInfo.processInfo.environment["LAYERTOOL_BIN"] ?? repositoryRoot + "/.build/debug/layertool"
        let tmp = TempDir("tar-strict")
        let layer = Self.write(RawTar.pax([Array("30 path=evil\n".utf8)]) + RawTar.file("good", "x") + RawTar.end, to: tmp.sub("bad-pax.tar"))
        for args in [["unpack", layer, tmp.sub("dest")], ["inspect", layer]] {
            let r = try run(binary, args)
            #expect(r.status == 1, "\(args[0]): \(r.stderr)")
            #expect(r.stderr == "layertool: \(layer): entry \"PaxHeaders/file\": tar: invalid tar header: PAX record length 30 is impossible (13 bytes left)\n")
            #expect(r.stdout.isEmpty)
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("dest")))
    }

    @Test func emptyBlobIsAnEmptyLayer() throws {
        let tmp = TempDir("tar-strict")
        let layer = Self.write([], to: tmp.sub("empty.tar"))
        let summary = try LayerApplier().inspect(.path(layer), validate: true)
        #expect(summary.entryCount == 0)
        #expect(summary.tarSize == 0)
    }

    @Test func truncatedPaddingIsReadWithItsOwnBytesHashed() throws {
        let tmp = TempDir("tar-strict")
        let bytes = Array(RawTar.file("f", "abc").prefix(515))
        let layer = Self.write(bytes, to: tmp.sub("short.tar"))
        let out = tmp.sub("out")
        let summaries = try Unpacker().unpack([LayerInput(source: .path(layer))], to: out)
        #expect(summaries[0].tarSize == 515)
        #expect(try String(contentsOfFile: out + "/f", encoding: .utf8) == "abc")
    }

    // MARK: - The validator reads the same whatever the chunk boundaries

    @Test("chunk boundaries do not matter", arguments: [1, 7, 511, 512, 513, 4096])
    func chunkBoundaries(_ chunk: Int) {
        func outcome(_ bytes: [UInt8], chunk: Int) -> String {
            var validator = TarValidator()
            do throws(LayerError) {
                var p = 0
                while p < bytes.count {
                    let piece = Array(bytes[p..<min(bytes.count, p + chunk)])
                    var failure: LayerError?
                    piece.withUnsafeBytes { b in
                        do throws(LayerError) { try validator.consume(b) } catch { failure = error }
                    }
                    if let failure { throw failure }
                    p += piece.count
                }
                let padding = try validator.finish()
                return "read, end at \(validator.endOffset.map(String.init) ?? "-"), padding \(padding)"
            } catch {
                return error.description
            }
        }
        let corpus = TarCorpus.all.map { ($0.name, $0.bytes) } + TarMutations.generate(count: 60)
        for (name, bytes) in corpus {
            let whole = outcome(bytes, chunk: max(1, bytes.count))
            #expect(outcome(bytes, chunk: chunk) == whole, "\(name)")
        }
    }
}

// MARK: - Against Go's reader

/// Go's `archive/tar`, as a program (`Tests/go-tar-oracle/main.go`) built for the test with
/// Debian's `go`, offline (GOPATH mode, no modules, no network), in a temp dir.
struct GoTarOracle {
    static let go = which("go")
    static let source = repositoryRoot + "/Tests/go-tar-oracle/main.go"
    let binary: String
    private let dir: TempDir

    init() throws {
        dir = TempDir("go-tar-oracle")
        binary = dir.sub("go-tar-oracle")
        var env = ProcessInfo.processInfo.environment
        env["GO111MODULE"] = "off"
        env["GOFLAGS"] = ""
        env["GOPROXY"] = "off"
        env["GOCACHE"] = dir.sub("cache")
        env["GOPATH"] = dir.sub("gopath")
        env["CGO_ENABLED"] = "0"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.go!)
        process.arguments = ["build", "-o", binary, Self.source]
        process.environment = env
        let err = Pipe()
        process.standardError = err
        try process.run()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "go build: " + String(decoding: message, as: UTF8.self)])
        }
    }

    /// Go's answer for each file: nil when it reads it, else its error.
    func verdicts(_ files: [String]) throws -> [String?] {
        let result = try run(binary, files)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        guard result.status == 0, lines.count == files.count else {
            throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "go-tar-oracle: \(result.stderr)"])
        }
        return lines.map { $0 == "accept" ? nil : String($0.dropFirst("reject\t".count)) }
    }

    /// Writes archives made by Go's tar.Writer into `dir`.
    func writeSamples(into dir: String) throws -> [String] {
        let result = try run(binary, ["-write", dir])
        guard result.status == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "go-tar-oracle -write: \(result.stderr)"])
        }
        return ["go-pax.tar", "go-gnu.tar", "go-ustar.tar"].map { dir + "/" + $0 }
    }
}

/// Archives written by the tar writers layers come from, when the tools are installed.
enum PeerArchives {
    static let bash = which("bash") ?? "/bin/bash"
    static var haveTools: Bool { which("tar") != nil && which("bsdtar") != nil && which("python3") != nil && which("setfattr") != nil }

    /// A tree with a file with a user xattr, a 9 GiB sparse file with two data regions, a path
    /// and a symlink target longer than 100 bytes, a file owned by uid 3000000, written by GNU
    /// tar (gnu, oldgnu, posix with each sparse version, ustar), bsdtar (pax, ustar) and Python
    /// (pax, gnu, ustar). The formats that cannot hold a file get the tree without it.
    static func make(in dir: String) throws -> [String] {
        let script = #"""
        set -euo pipefail
        out=$1; cd "$out"
        mkdir -p full/dir small/dir
        long=$(printf 'l%.0s' {1..60})/$(printf 'm%.0s' {1..70})
        for t in full small; do
          printf 'hello\n' > $t/dir/file; setfattr -n user.comment -v hi $t/dir/file
          mkdir -p "$t/$long"; echo x > "$t/$long/f"
          touch $t/bigid; chown 3000000:3000001 $t/bigid 2>/dev/null || true
        done
        ln -s "$long/f" full/longlink
        truncate -s 9G full/sparse
        printf middle | dd of=full/sparse bs=1 seek=4294967296 conv=notrunc status=none
        printf end | dd of=full/sparse bs=1 seek=$((9*1024*1024*1024-3)) conv=notrunc status=none
        tar --format=gnu --sparse --xattrs -cf gnutar-gnu.tar -C full .
        tar --format=oldgnu --sparse -cf gnutar-oldgnu.tar -C full .
        for v in 0.0 0.1 1.0; do tar --format=posix --sparse --sparse-version=$v --xattrs -cf gnutar-posix-$v.tar -C full .; done
        tar --format=ustar -cf gnutar-ustar.tar -C small dir
        bsdtar --format=pax -cf bsdtar-pax.tar -C full .
        bsdtar --format=ustar -cf bsdtar-ustar.tar -C small dir
        python3 - "$out" <<'PY'
        import sys, tarfile, io
        out = sys.argv[1]
        long = "long/" + "d" * 80 + "/" + "f" * 90 + "-caf\u00e9.txt"
        for fmt, name in ((tarfile.PAX_FORMAT, "python-pax.tar"), (tarfile.GNU_FORMAT, "python-gnu.tar"), (tarfile.USTAR_FORMAT, "python-ustar.tar")):
            with tarfile.open(out + "/" + name, "w", format=fmt) as t:
                d = tarfile.TarInfo("dir"); d.type = tarfile.DIRTYPE; d.mode = 0o755; t.addfile(d)
                f = tarfile.TarInfo("dir/file"); f.size = 6; f.mtime = 1700000000.5 if fmt == tarfile.PAX_FORMAT else 1700000000
                if fmt == tarfile.PAX_FORMAT: f.pax_headers = {"SCHILY.xattr.user.comment": "hi"}
                t.addfile(f, io.BytesIO(b"hello\n"))
                if fmt != tarfile.USTAR_FORMAT:
                    l = tarfile.TarInfo(long); l.size = 2; l.uid = 3000000; l.gid = 3000001; t.addfile(l, io.BytesIO(b"x\n"))
                    s = tarfile.TarInfo("link"); s.type = tarfile.SYMTYPE; s.linkname = long; t.addfile(s)
        PY
        rm -rf full small
        """#
        let result = try run(bash, ["-c", script, "peer-archives", dir])
        guard result.status == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "peer archives: \(result.stderr)"])
        }
        return try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tar") }.sorted().map { dir + "/" + $0 }
    }
}

@Suite(.enabled(if: GoTarOracle.go != nil, "needs Go (Debian golang-go) to build the archive/tar oracle"))
struct TarGoDifferentialTests {

    @Test func peerArchivesAreReadByBoth() throws {
        let oracle = try GoTarOracle()
        let tmp = TempDir("tar-peers")
        var archives = try oracle.writeSamples(into: tmp.path)
        if PeerArchives.haveTools && isRoot {
            let peers = try PeerArchives.make(in: tmp.mkdir("peers"))
            #expect(peers.count == 11, "\(peers)")
            archives += peers
        } else {
            // GNU tar, bsdtar, python3 and setfattr are installed by .ci/setup, and CI runs as root.
            print("TarGoDifferentialTests: GNU tar/bsdtar/Python archives skipped: needs root, tar, bsdtar, python3 and setfattr")
        }
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
