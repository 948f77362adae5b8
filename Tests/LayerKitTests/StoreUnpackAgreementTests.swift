import Foundation
@testable import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One multi-layer case: what a plain unpack makes of it must be what the store's mounted stack
/// shows (or both must refuse it).
struct AgreementCase: Sendable, CustomTestStringConvertible {
    let name: String
    let layers: [[TarEntry]]
    var testDescription: String { name }
}

/// The store applies each layer alone in overlayfs's format, on top of its lowers; a plain unpack
/// applies them all onto one tree. For every case the two must agree entry by entry (issue 10.8:
/// a symlink of one layer and a path through it in the next; whiteouts, opaque dirs and hardlinks
/// through symlinks; implied parents keeping the metadata they have below).
@Suite(.serialized, .requires(.root(because: "the store mounts the image"), .kernelOverlay))
struct StoreUnpackAgreementTests {
    static let cases: [AgreementCase] = [
        AgreementCase(name: "a file below a lower layer's symlink lands where the link points", layers: [
            [.symlink("lnk", "/somewhere"), .dir("somewhere")],
            [.file("lnk/file", "through the link\n")],
        ]),
        AgreementCase(name: "a dangling lower symlink is followed: its target is made", layers: [
            [.symlink("lnk", "/made/by/layer2")],
            [.file("lnk/file", "x\n")],
        ]),
        AgreementCase(name: "a relative symlink climbing out stays inside", layers: [
            [.dir("etc"), .dir("a/b", mode: 0o750), .symlink("a/b/up", "../../../../etc")],
            [.file("a/b/up/passwd", "inside\n")],
        ]),
        AgreementCase(name: "two hops of symlinks across layers", layers: [
            [.symlink("x", "y"), .dir("z")],
            [.symlink("y", "z")],
            [.file("x/f", "two hops\n")],
        ]),
        AgreementCase(name: "a whiteout through a lower symlink removes the file it names", layers: [
            [.dir("dir"), .file("dir/keep", "k\n"), .file("dir/other", "o\n"), .symlink("lnk", "dir")],
            [.whiteout("lnk", "keep")],
        ]),
        AgreementCase(name: "an opaque marker through a lower symlink hides the dir's lower content", layers: [
            [.dir("d"), .file("d/old", "old\n"), .symlink("l", "d")],
            [.opaque("l"), .file("l/new", "new\n")],
        ]),
        AgreementCase(name: "a hardlink to a lower file through a symlink", layers: [
            [.dir("d"), .file("d/f", "shared\n", mode: 0o640, uid: 7, gid: 8), .symlink("l", "d")],
            [.hardlink("h", "l/f")],
        ]),
        AgreementCase(name: "an implied parent keeps the metadata it has below", layers: [
            [.dir("d", mode: 0o700, uid: 5, gid: 6), .dir("d/e", mode: 0o711, uid: 3, gid: 4)],
            [.file("d/e/f", "f\n")],
        ]),
        AgreementCase(name: "a whiteout of a symlink removes the link, not its target", layers: [
            [.dir("d"), .file("d/f", "f\n"), .symlink("l", "d")],
            [.whiteout("", "l")],
        ]),
        AgreementCase(name: "a dir over a lower symlink replaces it", layers: [
            [.dir("d"), .file("d/f", "f\n"), .symlink("l", "d")],
            [.dir("l", mode: 0o700), .file("l/g", "g\n")],
        ]),
        AgreementCase(name: "a dir removed then made again shows only the new content", layers: [
            [.dir("a/b"), .file("a/b/x", "x\n"), .file("a/y", "y\n")],
            [.whiteout("", "a")],
            [.file("a/c", "c\n")],
        ]),
        AgreementCase(name: "a symlink through a symlink to an absolute path", layers: [
            [.dir("real/deep"), .symlink("abs", "/real"), .symlink("real/hop", "/real/deep")],
            [.file("abs/hop/f", "deep\n")],
        ]),
        AgreementCase(name: "a lower symlink in the middle of a path", layers: [
            [.dir("a"), .symlink("a/b", "/c"), .dir("c/d")],
            [.file("a/b/d/x", "x\n")],
        ]),
        AgreementCase(name: "a file replacing a lower symlink is a file", layers: [
            [.dir("d"), .symlink("l", "d")],
            [.file("l", "now a file\n")],
        ]),
        AgreementCase(name: "the root's metadata from a lower layer stays under layers that do not name it", layers: [
            [.dir(".", mode: 0o700, uid: 5, gid: 6), .file("a", "a\n")],
            [.file("b", "b\n")],
            [.dir("c")],
        ]),
        AgreementCase(name: "a symlink loop is refused by both", layers: [
            [.symlink("a", "b"), .symlink("b", "a")],
            [.file("a/x", "x\n")],
        ]),
        AgreementCase(name: "a path through a lower file is refused by both", layers: [
            [.file("f", "plain\n")],
            [.file("f/x", "x\n")],
        ]),
    ]

    @Test(arguments: cases)
    func theStoreShowsWhatAPlainUnpackMakes(_ c: AgreementCase) throws {
        let tmp = TempDir("agreement")
        let files = c.layers.enumerated().map { i, entries in
            TarBuilder.write(entries, to: tmp.sub("layer\(i).tar"))
        }

        // Plain unpack of the whole stack.
        let plainDest = tmp.sub("plain")
        var plainError: LayerError?
        do throws(LayerError) { _ = try Unpacker().unpack(files.map { LayerInput(source: .path($0)) }, to: plainDest) } catch { plainError = error }

        // The store: each layer unpacked in overlay format on its lowers, then mounted.
        let store = try LayerStore(root: tmp.sub("store"))
        var storeError: StoreError?
        let image = try Self.image(files)
        do throws(StoreError) { _ = try store.importImage(image, name: "case") } catch { storeError = error }

        if plainError != nil || storeError != nil {
            #expect(plainError != nil && storeError != nil,
                    "one side refused the image and the other did not: plain \(plainError.map { "\($0)" } ?? "ok"), store \(storeError.map { "\($0)" } ?? "ok")")
            return
        }
        let container = try store.createContainer(id: "view", base: "case", readOnly: true)
        let mount = try store.mountContainer(container.id)
        defer { _ = try? store.unmountContainer(container.id, detach: true) }
        var options = TreeSnapshot.Options()
        options.dirMtimes = false
        let plain = TreeSnapshot(plainDest, options: options)
        let mounted = TreeSnapshot(mount.mountpoint, options: options)
        #expect(mounted == plain, "the mounted stack differs from the plain unpack:\n\(mounted.differences(from: plain).joined(separator: "\n"))")
    }

    /// An image of the layer files, with its config and manifest, for `LayerStore.importImage`.
    static func image(_ files: [String]) throws -> ResolvedImage {
        let applier = LayerApplier()
        var layers = [ImageLayer]()
        for file in files {
            let summary = try applier.inspect(.path(file))
            let descriptor = Descriptor(mediaType: MediaType.ociLayer, digest: summary.blobDigest, size: summary.blobSize)
            layers.append(ImageLayer(descriptor: descriptor, diffID: summary.diffID, source: .path(file)))
        }
        let config = ImageConfig(architecture: "amd64", os: "linux", rootfs: ImageConfig.RootFS(diffIDs: layers.map(\.diffID)))
        let configBytes = CanonicalJSON.encode(config)
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: Digest.sha256(of: configBytes), size: Int64(configBytes.count)),
                                     layers: layers.map(\.descriptor))
        let manifestBytes = CanonicalJSON.encode(manifest)
        return ResolvedImage(reference: "case",
                             manifestDescriptor: Descriptor(mediaType: MediaType.ociManifest, digest: Digest.sha256(of: manifestBytes), size: Int64(manifestBytes.count)),
                             manifest: manifest, manifestBytes: manifestBytes, config: config, configBytes: configBytes, layers: layers)
    }
}
