import ArgumentParser

@main
struct LayerTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layertool",
        abstract: "Unpack, verify and inspect OCI and Docker image layers.",
        discussion: """
            Layers may be plain tar, gzip or zstd: the format is read from the data, never from the
            file name. Every layer's blob digest and diffID are computed while it is unpacked.
            """,
        subcommands: [Unpack.self, Diff.self, Inspect.self, Mount.self, Umount.self, Commit.self, Export.self, Ls.self, Rm.self, Gc.self, FuseServe.self, Snapshotter.self]
    )
}
