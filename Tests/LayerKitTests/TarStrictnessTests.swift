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
/// - The differential tests (`TarGoDifferentialTests`) run Go's reader itself
///   (`Tests/go-tar-oracle`, built offline with Debian's `go`) and LayerKit over the whole corpus
///   plus a few hundred random mutations of header bytes (fixed seed), and require the same
///   answer for every archive: refused by both, or read by both, or read by Go and refused by
///   LayerKit as ambiguous.
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
        let tmp = TempDir("tar-strict")
        let layer = Self.write(RawTar.pax([Array("30 path=evil\n".utf8)]) + RawTar.file("good", "x") + RawTar.end, to: tmp.sub("bad-pax.tar"))
        for args in [["unpack", layer, tmp.sub("dest")], ["inspect", layer]] {
            let r = try Layertool.run(args)
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
