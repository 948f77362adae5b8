import ArgumentParser
import Foundation
import LayerKit

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the changes between two trees, in an upper dir, or of a container, as a layer.",
        discussion: """
            With OLD and NEW, the layer turns OLD into NEW (deleted names become .wh. whiteouts). With
            --upper, the layer holds what an overlayfs upper dir (0/0 char device whiteouts, opaque xattrs)
            or an aufs-style upper (.wh.NAME files, .wh..wh..opq) records. With CONTAINER, the layer holds
            the changes of that container of the layer store (--root): its upper dir.

            The output is a POSIX pax tar, reproducible (sorted, numeric ids, no user or group names),
            compressed as OUT's extension says (.tar, .tar.gz/.tgz, .tar.zst) or as --compression says.
            It is written to a temporary name and renamed at the end: a failure leaves no partial OUT.
            Prints the OCI descriptor (media type, digest, size) and the diffID.

            Examples:
              layertool diff rootfs-before rootfs-after -o layer.tar.gz
              layertool diff --upper /var/lib/x/upper -o - --compression zstd > layer.tar.zst
              layertool diff c1 -o c1-changes.tar.gz
            """
    )

    @Option(help: "An upper dir to read instead of two trees.")
    var upper: String?

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("Where to write the layer; - for standard output.", valueName: "OUT"))
    var output: String

    @Option(help: ArgumentHelp("none, gzip or zstd (default: from OUT's extension, else gzip).", valueName: "none|gzip|zstd"))
    var compression: String?

    @Option(help: "Compression level (gzip 1-9, default 6; zstd 1-19, default 3).")
    var level: Int?

    @Option(help: ArgumentHelp("Clamp mtimes to this time (seconds since the epoch); defaults to $SOURCE_DATE_EPOCH when set.", valueName: "SECONDS"))
    var sourceDateEpoch: Int64?

    @Flag(help: "Compare file contents even when size and a sub-second mtime are equal.")
    var compareContents = false

    @Flag(help: "fsync the output before renaming it into place.")
    var fsync = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The old and new trees, or a container of the store.", valueName: "OLD NEW | CONTAINER"))
    var trees: [String] = []

    @OptionGroup var store: StoreOptions

    func validate() throws {
        if upper != nil {
            guard trees.isEmpty else { throw ValidationError("give either --upper or OLD NEW, not both") }
        } else {
            guard (1...2).contains(trees.count) else { throw ValidationError("give OLD and NEW, or CONTAINER (or --upper UPPERDIR)") }
        }
        if let compression, Compression(rawValue: compression) == nil {
            throw ValidationError("--compression is none, gzip or zstd")
        }
        try CompressionLevel.validate(level, for: resolvedCompression)
    }

    var resolvedCompression: Compression {
        if let compression, let c = Compression(rawValue: compression) { return c }
        if output.hasSuffix(".tar") { return .none }
        if output.hasSuffix(".zst") || output.hasSuffix(".tzst") { return .zstd }
        return .gzip
    }

    func run() throws {
        var options = ToolEnvironment.diffOptions(compression: resolvedCompression)
        options.level = level
        options.compareContents = compareContents
        options.syncOutput = fsync
        options.sourceDateEpoch = sourceDateEpoch ?? ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap { Int64($0) }
        var source: ChangeSource = upper.map { .upper($0) } ?? .trees(old: trees[0], new: trees.last!)
        if upper == nil && trees.count == 1 {
            guard let opened = try store.openExisting() else {
                throw fail(StoreError(.notFound, "no container \(trees[0].debugDescription) (no layer store at \(store.resolvedRoot))"))
            }
            do throws(StoreError) {
                guard let container = try opened.container(trees[0]) else { throw StoreError(.notFound, "no container \(trees[0].debugDescription)") }
                guard !container.readOnly else { throw StoreError(.invalidArgument, "container \(container.id) is read-only: it has no changes") }
                try opened.flushChanges(of: container.id)
                source = .upper(opened.upperDir(of: container.id), lowerRoot: container.chainID.map(opened.paths.diffDir))
            } catch {
                throw fail(error)
            }
        }
        Output.progress("writing \(output == "-" ? "layer to stdout" : output)")
        let result: DiffResult
        do throws(LayerError) {
            result = try LayerDiffer(options: options).write(source, toFile: output)
        } catch {
            Output.endProgress()
            throw fail(error)
        }
        Output.endProgress()
        // With the layer on stdout, the description goes to stderr.
        let text: String
        if json {
            text = Output.json(result)
        } else {
            var lines = [
                "mediaType  \(result.descriptor.mediaType)",
                "digest     \(result.descriptor.digest)",
                "size       \(result.descriptor.size)",
                "diffID     \(result.diffID)",
                "entries    \(result.entryCount) (tar \(result.tarSize) bytes)",
            ]
            for w in result.warnings { lines.append("warning: \(w)") }
            text = lines.joined(separator: "\n")
        }
        if output == "-" {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        } else {
            print(text)
        }
    }
}
