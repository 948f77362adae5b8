import Testing
@testable import LayerKit

@Suite struct DigestTests {
    @Test func parsesAndPrintsCanonicalForm() throws {
        let text = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        let d = try Digest(parsing: text)
        #expect(d.description == text)
        #expect(d == Digest.sha256(of: [UInt8]()))
    }

    @Test(arguments: [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",   // no algorithm
        "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", // uppercase
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",  // 63 digits
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "",
    ])
    func rejectsMalformedDigests(_ text: String) {
        #expect(throws: DigestError.self) { try Digest(parsing: text) }
    }

    @Test func errorNamesTheTextAndReason() {
        do {
            _ = try Digest(parsing: "sha256:xyz")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("sha256:xyz"))
            #expect(error.description.contains("64 hex digits"))
        }
    }

    @Test func knownVector() {
        #expect(Digest.sha256(of: Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func streamingEqualsOneShot() {
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var h = SHA256Hasher()
        var i = 0
        while i < data.count {
            let n = min(7919, data.count - i)
            data[i..<(i + n)].withUnsafeBytes { h.update($0) }
            i += n
        }
        #expect(h.finalize() == Digest.sha256(of: data))
    }

    @Test func chainIDFollowsTheSpec() throws {
        let a = Digest.sha256(of: Array("a".utf8))
        let b = Digest.sha256(of: Array("b".utf8))
        let c = Digest.sha256(of: Array("c".utf8))
        let chain = ChainID.chain([a, b, c])
        #expect(chain.count == 3)
        #expect(chain[0] == a)
        #expect(chain[1] == Digest.sha256(of: Array("\(a) \(b)".utf8)))
        #expect(chain[2] == Digest.sha256(of: Array("\(chain[1]) \(c)".utf8)))
        #expect(ChainID.of([]) == nil)
    }

    @Test func chainIDOfTheBusyboxFixtureMatchesAnIndependentComputation() throws {
        // diffIDs of fixtures/busybox (fixtures/README.md); chainID computed with sha256sum:
        // printf 'sha256:0763... sha256:9b64...' | sha256sum
        let diffIDs = try BusyboxFixture.diffIDs.map { try Digest(parsing: $0) }
        #expect(ChainID.of(diffIDs)?.description == BusyboxFixture.chainID)
    }
}
