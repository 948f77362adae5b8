import Foundation
import Testing
@testable import LayerKit

@Suite struct CompressionTests {
    func detect(_ bytes: [UInt8]) -> Compression? {
        bytes.withUnsafeBytes { Compression.detect($0) }
    }

    @Test func detectsFromMagicBytes() {
        #expect(detect([0x1f, 0x8b, 0x08, 0, 0]) == .gzip)
        #expect(detect([0x28, 0xb5, 0x2f, 0xfd, 0]) == .zstd)
        for x in [0x50, 0x55, 0x5f] as [UInt8] {
            #expect(detect([x, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]) == .zstd, "skippable frame 0x\(String(x, radix: 16))")
        }
        #expect(detect([]) == Compression.none, "a zero-byte blob is an empty layer")
        #expect(detect([UInt8](repeating: 0, count: 1024)) == Compression.none, "an empty tar")
        #expect(Compression.magicLength >= 512, "an empty tar is only recognised from a whole block")
        #expect(detect(Array("hello world, not a layer".utf8)) == nil)
        #expect(detect([0x1f, 0x8b, 0x07]) == nil, "gzip with a method other than deflate")
        #expect(detect([0x42, 0x5a, 0x68]) == nil, "bzip2 is not an OCI layer compression")
    }

    @Test func detectsTarByUstarMagicAndByChecksum() {
        let ustar = TarBuilder.build([.file("a", "a")])
        #expect(detect(Array(ustar.prefix(512))) == Compression.none)
        // A v7 header (no ustar magic) is recognised by its checksum.
        var v7 = Array(ustar.prefix(512))
        for i in 257..<265 { v7[i] = 0 }
        var sum = 0
        for i in 0..<512 { sum += (148..<156).contains(i) ? 32 : Int(v7[i]) }
        let field = Array(String(format: "%06o", sum).utf8) + [0, 32]
        for (i, b) in field.enumerated() { v7[148 + i] = b }
        #expect(detect(v7) == Compression.none)
        v7[0] ^= 0xff  // checksum now wrong
        #expect(detect(v7) == nil)
    }

    @Test func theFileNameDoesNotMatter() throws {
        let tmp = TempDir()
        let gz = TarBuilder.write([.file("a", "a")], to: tmp.sub("misnamed.tar"), compression: .gzip)
        let zst = TarBuilder.write([.file("a", "a")], to: tmp.sub("misnamed.gz"), compression: .zstd)
        #expect(try LayerApplier().inspect(.path(gz)).compression == .gzip)
        #expect(try LayerApplier().inspect(.path(zst)).compression == .zstd)
    }

    @Test(arguments: ["basic.tar", "basic.tar.gz", "basic.tar.zst", "basic-skippable.tar.zst", "basic-multimember.tar.gz"])
    func everyFormOfTheSameTarHasTheSameDiffID(_ name: String) throws {
        let plain = try LayerApplier().inspect(.path(fixturesDir + "/layers/basic.tar"))
        let other = try LayerApplier().inspect(.path(fixturesDir + "/layers/\(name)"))
        #expect(other.diffID == plain.diffID)
        #expect(other.entryCount == plain.entryCount)
    }

    /// A gzip layer whose deflate stream is sound but whose bytes are not (stored blocks, a tar
    /// header garbled, the CRC wrong): the tar reader chokes early, the decoder finds the checksum
    /// at the end. The decoder's verdict is reported every time, with or without apply workers;
    /// it used to depend on whether the decoder got there before the failed apply stopped it.
    @Test func aCorruptGzipLayerFailsWithTheSameErrorEveryTime() throws {
        let tmp = TempDir()
        var tar = TarBuilder.build((0..<400).map { TarEntry.file("d/f\(String(format: "%05d", $0))", String(repeating: "y", count: 9000)) })
        let name = Array("d/f00003".utf8)
        let at = try #require((0..<(tar.count - name.count)).first { tar[$0..<($0 + name.count)].elementsEqual(name) })
        tar[at + 2] = UInt8(ascii: "g")   // the header's checksum no longer matches
        var blob: [UInt8] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03]
        var offset = 0
        while offset < tar.count {
            let n = min(65_535, tar.count - offset)
            blob.append(offset + n == tar.count ? 1 : 0)   // a stored block, the last one final
            blob += [UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)]
            blob += tar[offset..<(offset + n)]
            offset += n
        }
        let size = UInt32(truncatingIfNeeded: tar.count)
        blob += [0, 0, 0, 0]   // CRC32: wrong
        blob += [UInt8(size & 0xff), UInt8((size >> 8) & 0xff), UInt8((size >> 16) & 0xff), UInt8(size >> 24)]
        let path = tmp.sub("corrupt.tar.gz")
        createFile(path, bytes: Data(blob))
        var messages = Set<String>()
        for round in 0..<12 {
            var options = ApplyOptions()
            options.applyWorkers = round % 3
            let dest = tmp.mkdir("dest\(round)")
            do throws(LayerError) {
                _ = try LayerApplier(options: options).apply(.path(path), to: dest)
                Issue.record("round \(round): a corrupt layer was applied")
            } catch {
                #expect(error.kind == .corruptArchive)
                messages.insert(error.description)
            }
        }
        #expect(messages.count == 1 && messages.first?.contains("gzip checksum mismatch") == true, "\(messages)")
    }

    @Test func anEmptyTarIsAnEmptyLayer() throws {
        // What `layertool diff` writes when nothing changed, and what `tar -cf x.tar -T /dev/null` gives.
        let tmp = TempDir()
        let path = tmp.sub("empty.tar")
        createFile(path, bytes: Data(count: 1024))
        let dest = tmp.mkdir("dest")
        let s = try LayerApplier().apply(.path(path), to: dest)
        #expect(s.entryCount == 0 && s.compression == Compression.none)
        #expect(s.diffID.description == emptyLayerDiffID)
    }

    @Test func bytesAfterTheEndOfArchiveCountInTheDiffID() throws {
        let path = fixturesDir + "/layers/trailing-garbage.tar"
        let s = try LayerApplier().inspect(.path(path))
        let bytes = try #require(FileManager.default.contents(atPath: path))
        #expect(s.diffID == Digest.sha256(of: [UInt8](bytes)))
        #expect(s.tarSize == Int64(bytes.count))
    }

    @Test(arguments: [
        ("garbage.bin", "neither gzip, zstd nor tar"),
        ("truncated.tar.gz", "truncated"),
        ("truncated.tar.zst", "truncated"),
        ("corrupt.tar.gz", "gzip"),
        ("corrupt-crc.tar.gz", "checksum"),
    ])
    func badBlobsFailWithAClearReason(_ name: String, _ reason: String) {
        #expect {
            _ = try LayerApplier().inspect(.path(fixturesDir + "/layers/\(name)"))
        } throws: { error in
            guard let e = error as? LayerError else { return false }
            return e.kind == .corruptArchive && e.description.contains(reason) && e.description.contains(name)
        }
    }
}
