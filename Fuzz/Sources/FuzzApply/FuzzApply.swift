// Fuzz target `apply`: the input is a layer blob (any bytes: tar, tar+gzip, tar+zstd or junk).
//
// Each input is applied in one of three ways, picked by a hash of the input:
// - plain, with `LayerApplier`, onto an empty dir; then `inspect(validate: true)` must agree:
//   the same digests and entry count when the apply succeeded, a rejection when the apply
//   rejected the archive for what it says (not for what the tree held); and the same apply with
//   file-creating workers (1 or 2, by the hash) and without (0) must give the same tree, the
//   same summary and warnings, or the same error;
// - overlay format, onto an empty dir above a lower dir (which must stay as it was);
// - `Unpacker` onto a dir that has content: a layer rejected for what it says leaves it as it was.
// After every run: nothing outside the target changed (a sentinel dir beside it, the lower dir,
// the host files), no file descriptor leaked, every error is one line.
import FuzzSupport
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    ApplyFuzz.setUp()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    ApplyFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

enum ApplyFuzz {
    nonisolated(unsafe) static var lowerSignature: TreeSignature!
    nonisolated(unsafe) static var hostSignature: TreeSignature!
    nonisolated(unsafe) static var sentinelSignature: TreeSignature!
    nonisolated(unsafe) static var existingSignature: TreeSignature!
    static var lower: String { Scratch.root + "/lower" }

    static func setUp() {
        Scratch.setUp()
        // The lower dir of overlay-format applies: a layer in overlay form, as the store keeps them.
        Fixtures.makeLowerLayer(at: lower)
        lowerSignature = TreeSignature(of: lower)
        hostSignature = TreeSignature(of: Scratch.host)
        let probe = Scratch.freshRun()
        Fixtures.makeSentinel(at: probe + "/sentinel")
        sentinelSignature = TreeSignature(of: probe + "/sentinel")
        Fixtures.makeExistingTree(at: probe + "/existing")
        existingSignature = TreeSignature(of: probe + "/existing")
    }

    /// Errors that say the archive itself is wrong (not the tree it was applied to).
    static func isAboutTheArchive(_ error: LayerError) -> Bool {
        switch error.kind {
        case .pathEscapes, .corruptArchive, .digestMismatch: return true
        case .invalidEntry:
            // A hardlink's target is looked up in the tree (the layer's earlier entries, or what
            // the target held): no reading of the archive alone can say it is missing.
            return !error.reason.hasPrefix("hardlink target")
        default: return false
        }
    }

    static func run(_ input: UnsafeRawBufferPointer) {
        let run = Scratch.freshRun()
        let blob = run + "/layer"
        Scratch.write(input, to: blob)
        Fixtures.makeSentinel(at: run + "/sentinel")
        let target = run + "/target"

        let hash = fnv1a(input)
        switch hash % 3 {
        case 0:
            mkdir(target, 0o755)
            var withWorkers = ApplyOptions(format: .plain)
            withWorkers.applyWorkers = hash & 8 == 0 ? 1 : 2
            let applied = Invariant.noDescriptorLeak("apply (plain, \(withWorkers.applyWorkers) workers)") {
                Result { () throws(LayerError) in try LayerApplier(options: withWorkers).apply(.path(blob), to: target) }
            }
            let serialTarget = run + "/serial"
            mkdir(serialTarget, 0o755)
            var serialOptions = ApplyOptions(format: .plain)
            serialOptions.applyWorkers = 0
            let serial = Invariant.noDescriptorLeak("apply (plain, serial)") {
                Result { () throws(LayerError) in try LayerApplier(options: serialOptions).apply(.path(blob), to: serialTarget) }
            }
            switch (applied, serial) {
            case (.success(let a), .success(let s)):
                if a.blobDigest != s.blobDigest || a.diffID != s.diffID || a.entryCount != s.entryCount || a.warnings != s.warnings {
                    Invariant.fail("apply with and without workers disagree:\nworkers: \(a)\nserial:  \(s)")
                }
            case (.failure(let a), .failure(let s)):
                // An error may name the dir it was applied to. (A corrupt compressed layer was
                // reported by the decoder or the tar reader, whichever thread got there first; the
                // decoder now always reaches its verdict, so the text is compared here too.)
                if a.description.replacing(target, with: serialTarget) != s.description {
                    Invariant.fail("apply with and without workers fail differently:\nworkers: \(a)\nserial:  \(s)")
                }
            case (.success(let a), .failure(let s)):
                Invariant.fail("apply succeeds with workers but fails without: \(s)\nworkers: \(a)")
            case (.failure(let a), .success(let s)):
                Invariant.fail("apply fails with workers but succeeds without: \(a)\nserial: \(s)")
            }
            let treeWithWorkers = TreeSignature(of: target), serialTree = TreeSignature(of: serialTarget)
            if treeWithWorkers != serialTree {
                Invariant.fail("apply with and without workers made different trees:\n\(treeWithWorkers.difference(from: serialTree))")
            }
            let inspected = Invariant.noDescriptorLeak("inspect") {
                Result { () throws(LayerError) in try LayerApplier().inspect(.path(blob), validate: true) }
            }
            switch (applied, inspected) {
            case (.success(let a), .success(let i)):
                if a.blobDigest != i.blobDigest || a.diffID != i.diffID || a.entryCount != i.entryCount
                    || a.tarSize != i.tarSize || a.blobSize != i.blobSize || a.compression != i.compression {
                    Invariant.fail("apply and inspect disagree:\napply:   \(a)\ninspect: \(i)")
                }
            case (.success(let a), .failure(let e)):
                Invariant.fail("inspect(validate: true) rejects a layer apply accepts: \(e)\napply: \(a)")
            case (.failure(let e), .success):
                Invariant.oneLine(e.description, "apply")
                if isAboutTheArchive(e) {
                    Invariant.fail("apply rejects the archive (\(e.kind)) but inspect(validate: true) accepts it: \(e)")
                }
            case (.failure(let a), .failure(let i)):
                Invariant.oneLine(a.description, "apply")
                Invariant.oneLine(i.description, "inspect")
            }
        case 1:
            mkdir(target, 0o755)
            let options = ApplyOptions(format: .overlay(.trusted), lowerDirs: [lower])
            let applied = Invariant.noDescriptorLeak("apply (overlay)") {
                Result { () throws(LayerError) in try LayerApplier(options: options).apply(.path(blob), to: target) }
            }
            if case .failure(let e) = applied { Invariant.oneLine(e.description, "apply (overlay)") }
            let now = TreeSignature(of: lower)
            if now != lowerSignature { Invariant.fail("an overlay apply changed its lower dir:\n\(now.difference(from: lowerSignature))") }
        default:
            Fixtures.makeExistingTree(at: target)
            let unpacked = Invariant.noDescriptorLeak("unpack (in place)") {
                Result { () throws(LayerError) in try Unpacker().unpack([LayerInput(source: .path(blob))], to: target) }
            }
            if case .failure(let e) = unpacked {
                Invariant.oneLine(e.description, "unpack (in place)")
                let now = TreeSignature(of: target)
                if isAboutTheArchive(e) && now != existingSignature {
                    Invariant.fail("an in-place unpack rejected the layer (\(e)) after changing the destination:\n\(now.difference(from: existingSignature))")
                }
            }
        }

        let names = Set(TreeSignature.names(run))
        if !names.isSubset(of: ["layer", "sentinel", "target", "serial"]) {
            Invariant.fail("something was created beside the target: \(names.sorted())")
        }
        let sentinel = TreeSignature(of: run + "/sentinel")
        if sentinel != sentinelSignature { Invariant.fail("the sentinel beside the target changed:\n\(sentinel.difference(from: sentinelSignature))") }
        let host = TreeSignature(of: Scratch.host)
        if host != hostSignature { Invariant.fail("the host files changed:\n\(host.difference(from: hostSignature))") }
    }
}
