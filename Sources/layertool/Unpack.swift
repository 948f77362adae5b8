import ArgumentParser
import Foundation
import LayerKit

struct Unpack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply layers, in order, onto a directory.",
        discussion: """
            Each LAYER is a file (tar, tar+gzip or tar+zstd) or - for standard input. Whiteouts
            (.wh.NAME, .wh..wh..opq) remove what earlier layers put there. Nothing outside DEST is ever
            created, changed or removed, whatever the archive says.

            A DEST that is missing or empty is built beside it and moved into place only when every
            layer has been applied and verified: on any error it is left as it was. A DEST that has
            content is checked first (each layer read in full: digests, names) and then changed in place.

            With --image and no DEST, the image is imported into the layer store (--root): each layer
            the store does not have yet is unpacked in overlay format into its own dir, shared with
            every image that has it. Prints the image name, its chainID and each layer's chainID.
            LAYOUT may also be a `docker save` tarball (an OCI layout inside, as Docker 25+ writes it,
            or the older manifest.json form); its first tag names the image unless --name says.

            Examples:
              layertool unpack base.tar.gz app.tar.zst rootfs/
              layertool unpack --digest sha256:3f... layer.tar.gz rootfs/
              layertool unpack --image ./oci-layout:latest rootfs/
              layertool unpack --image ./oci-layout:latest --name myimage
              curl ... | layertool unpack - rootfs/
            """
    )

    @Option(name: .customLong("digest"), help: ArgumentHelp(
        "Expected blob digest (sha256:HEX) of a layer; repeat once per layer, in order.",
        valueName: "sha256:HEX"))
    var digests: [String] = []

    @Option(name: .customLong("image"), help: ArgumentHelp(
        "Flatten the image in this OCI image layout instead of LAYER files (REF defaults to the only image, or latest).",
        valueName: "LAYOUT[:REF]"))
    var image: String?

    @Option(help: ArgumentHelp("Output format: plain (a full tree) or overlay (a layer dir for overlayfs: whiteouts as 0/0 devices, trusted.overlay.opaque).", valueName: "plain|overlay"))
    var format: String = "plain"

    @Flag(help: "Apply security.selinux labels from the archive (skipped by default).")
    var selinuxLabels = false

    @Option(help: ArgumentHelp("Threads that create small files beside the one parsing the archive (0: all on one thread). Used when DEST starts empty.", valueName: "N"))
    var applyWorkers: Int = ApplyOptions.defaultApplyWorkers

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Option(help: ArgumentHelp("With --image and no DEST: the layer store to import into (default: /var/lib/layertool for root, else $XDG_DATA_HOME/layertool or ~/.local/share/layertool).", valueName: "DIR"))
    var root: String?

    @Option(help: ArgumentHelp("With --image and no DEST: the image's name in the store (default: REF, or latest).", valueName: "NAME"))
    var name: String?

    @Argument(help: ArgumentHelp("Layers to apply, then the destination directory.", valueName: "LAYER... DEST"))
    var paths: [String] = []

    func validate() throws {
        if image != nil && paths.isEmpty {
            guard !selinuxLabels else { throw ValidationError("--selinux-labels does not go with a store import") }
        } else if root != nil || name != nil {
            throw ValidationError("--root and --name go with a store import: --image LAYOUT[:REF] without DEST")
        }
        if image != nil {
            guard paths.count <= 1 else { throw ValidationError("with --image, give only DEST (or nothing, to import into the layer store)") }
            guard digests.isEmpty else { throw ValidationError("--digest does not go with --image: the image's manifest and config give the digests") }
        } else {
            guard paths.count >= 2 else { throw ValidationError("give at least one LAYER and a DEST") }
            guard digests.count <= paths.count - 1 else {
                throw ValidationError("\(digests.count) --digest values for \(paths.count - 1) layers")
            }
        }
        guard format == "plain" || format == "overlay" else { throw ValidationError("--format is plain or overlay") }
        guard (0...64).contains(applyWorkers) else { throw ValidationError("--apply-workers is 0 to 64") }
    }

    func run() throws {
        if let image, paths.isEmpty { return try importIntoStore(image) }
        let destination = paths.last!
        var options = ToolEnvironment.applyOptions()
        options.format = format == "overlay" ? .overlay(.trusted) : .plain
        options.xattrPolicy.carriesSELinuxLabels = selinuxLabels
        options.applyWorkers = applyWorkers

        if let image {
            let (layoutPath, reference) = OCIImageLayout.parse(image)
            do throws(ImageError) {
                // The layers are known once the image is read: the progress names them from then on.
                let summaries = try Unpacker(options: options).unpackImage(at: layoutPath, reference: reference, to: destination) { i, summary in
                    Output.progress("[\(i + 1)] \(summary.blobDigest)")
                }
                Output.endProgress()
                let resolvedNames = summaries.map { "\(layoutPath)@\($0.blobDigest)" }
                printSummaries(summaries, names: resolvedNames)
            } catch {
                Output.endProgress()
                throw fail(error)
            }
            return
        }
        var inputs = [LayerInput]()
        do throws(LayerError) {
            let layerPaths = paths.dropLast()
            if layerPaths.filter({ $0 == "-" }).count > 1 {
                throw LayerError(.input, layer: "-", "standard input can be read only once")
            }
            for (i, p) in layerPaths.enumerated() {
                var expected: Digest? = nil
                if i < digests.count {
                    do { expected = try Digest(parsing: digests[i]) } catch {
                        throw LayerError(.input, layer: p, "--digest: \(error.description)")
                    }
                }
                let source: LayerSource = p == "-" ? .fileDescriptor(0) : .path(p)
                inputs.append(LayerInput(source: source, name: p, expecting: LayerExpectation(blobDigest: expected)))
            }
            let total = inputs.count
            let names = inputs.map(\.name)
            if let first = names.first { Output.progress("[1/\(total)] \(first)") }
            let summaries = try Unpacker(options: options).unpack(inputs, to: destination) { i, _ in
                if i + 1 < total { Output.progress("[\(i + 2)/\(total)] \(names[i + 1])") }
            }
            Output.endProgress()
            printSummaries(summaries, names: names)
        } catch {
            Output.endProgress()
            throw fail(error)
        }
    }

    private func printSummaries(_ summaries: [LayerSummary], names: [String]) {
        if json {
            print(Output.json(Output.records(summaries, names: names)))
        } else {
            for (s, n) in zip(summaries, names) { print(Output.human(s, name: n)) }
            if let chain = ChainID.of(summaries.map(\.diffID)) { print("chainID \(chain)") }
        }
    }
}
