// Fuzz target `image`: the input is a `docker save` tarball (Docker 25+'s OCI form or the older
// manifest.json form) or an OCI image layout packed as a tar.
//
// Each input is used in one of four ways, picked by a hash of the input:
// - `Unpacker().unpackImage(at: TARBALL, to: DEST)`;
// - `LayerStore.importArchive(TARBALL)` into a new store;
// - the tar extracted to a dir (as someone handing over a layout dir would), then
//   `LayerStore.importImage(layout:)` from it;
// - the same dir, then `Unpacker().unpackImage(at: DIR, to: DEST)`.
// Invariants: the host files (a valid layer whose digest seeds name, a file whose digest no input
// names) are never imported, hashed into a message or changed; an unpack that fails leaves no
// DEST and no staging dir; the store opens clean afterwards (`verify()` finds nothing) and is
// empty again after removing its images and collecting garbage; no descriptor leaks; errors
// are one line.
import FuzzSupport
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    ImageFuzz.setUp()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    ImageFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

enum ImageFuzz {
    nonisolated(unsafe) static var hostSignature: TreeSignature!
    nonisolated(unsafe) static var sentinelSignature: TreeSignature!

    static func setUp() {
        Scratch.setUp()
        hostSignature = TreeSignature(of: Scratch.host)
        let probe = Scratch.freshRun()
        Fixtures.makeSentinel(at: probe + "/sentinel")
        sentinelSignature = TreeSignature(of: probe + "/sentinel")
    }

    /// A message must never carry the digest of a host file it had no business reading.
    static func checkMessage(_ description: String, _ what: String) {
        Invariant.oneLine(description, what)
        if description.contains(HostFiles.oracleDigest.hex) {
            Invariant.fail("\(what): the error prints the digest of a host file (a hash oracle): \(description)")
        }
    }

    static func run(_ input: UnsafeRawBufferPointer) {
        let run = Scratch.freshRun()
        let tarball = run + "/image.tar"
        Scratch.write(input, to: tarball)
        Fixtures.makeSentinel(at: run + "/sentinel")
        let dest = run + "/dest"
        let storeRoot = run + "/store"
        var expected: Set<String> = ["image.tar", "sentinel"]

        let mode = fnv1a(input) % 4
        var imagePath = tarball
        if mode >= 2 {
            // A layout dir as someone would hand it over: the tar extracted (with LayerKit's own
            // confinement) into a dir.
            let layoutDir = run + "/layout"
            let extracted = Invariant.noDescriptorLeak("extract") {
                Result { () throws(LayerError) in try Unpacker().unpack([LayerInput(source: .path(tarball))], to: layoutDir) }
            }
            guard case .success = extracted else { return finish(run, expected: expected) }
            expected.insert("layout")
            imagePath = layoutDir
        }

        switch mode {
        case 0, 3:
            let unpacked = Invariant.noDescriptorLeak("unpackImage") {
                Result { () throws(ImageError) in try Unpacker().unpackImage(at: imagePath, to: dest) }
            }
            switch unpacked {
            case .success:
                expected.insert("dest")
                checkNoSecret(in: dest)
            case .failure(let e):
                checkMessage(e.description, "unpackImage")
                if access(dest, F_OK) == 0 { Invariant.fail("unpackImage failed (\(e)) and left DEST behind") }
            }
        default:
            expected.insert("store")
            let imported = Invariant.noDescriptorLeak("import") {
                Result { () throws(StoreError) -> ImportResult in
                    let store = try LayerStore(root: storeRoot)
                    if mode == 1 { return try store.importArchive(imagePath, reference: nil) }
                    return try store.importImage(layout: OCIImageLayout(path: imagePath), reference: nil)
                }
            }
            switch imported {
            case .success(let result):
                for layer in result.layers where layer.blobDigest == HostFiles.secretLayerDigest {
                    Invariant.fail("a host file was imported as layer \(layer.chainID)")
                }
            case .failure(let e):
                checkMessage(e.description, "import")
            }
            checkStore(storeRoot)
        }
        finish(run, expected: expected)
    }

    /// The store opens clean, holds no host file, and empties out through `rm` and gc.
    static func checkStore(_ root: String) {
        Invariant.noDescriptorLeak("reopening the store") {
            let store: LayerStore
            do throws(StoreError) { store = try LayerStore(root: root) } catch {
                Invariant.fail("the store does not open after an import: \(error)")
            }
            if access(store.paths.blob(HostFiles.secretLayerDigest), F_OK) == 0 || access(store.paths.blob(HostFiles.oracleDigest), F_OK) == 0 {
                Invariant.fail("a host file is in the store's blobs")
            }
            do throws(StoreError) {
                if !store.openingCleanup.isEmpty { Invariant.fail("reopening the store had to clean up: \(store.openingCleanup)") }
                let problems = try store.verify()
                if !problems.isEmpty { Invariant.fail("verify() after an import: \(problems)") }
                try store.removeImages(try store.images().map(\.name))
                _ = try store.collectGarbage()
                let layers = try store.layers()
                if !layers.isEmpty { Invariant.fail("gc left \(layers.count) layers with no image") }
                let blobs = TreeSignature.names(store.paths.blobsDir)
                if !blobs.isEmpty { Invariant.fail("gc left blobs no image names: \(blobs)") }
                let after = try store.verify()
                if !after.isEmpty { Invariant.fail("verify() after gc: \(after)") }
            } catch {
                Invariant.fail("a store operation after an import failed: \(error)")
            }
        }
    }

    static func checkNoSecret(in dest: String) {
        if access(dest + "/LAYERKIT-HOST-SECRET", F_OK) == 0 { Invariant.fail("a host file was unpacked as a layer") }
    }

    static func finish(_ run: String, expected: Set<String>) {
        let names = Set(TreeSignature.names(run))
        if names != expected && !names.isSubset(of: expected) {
            Invariant.fail("left beside the image: \(names.subtracting(expected).sorted())")
        }
        let sentinel = TreeSignature(of: run + "/sentinel")
        if sentinel != sentinelSignature { Invariant.fail("the sentinel changed:\n\(sentinel.difference(from: sentinelSignature))") }
        let host = TreeSignature(of: Scratch.host)
        if host != hostSignature { Invariant.fail("the host files changed:\n\(host.difference(from: hostSignature))") }
    }
}
