import ArgumentParser
import Foundation
import LayerKit
import LayerKitFUSE

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a container on an image and mount its root filesystem, or mount explicit dirs.",
        discussion: """
            With IMAGE (a name in the store, or a layer's chainID or a unique 12+ digit prefix of it), a
            container is created (ROOT/containers/ID/{upper,work,merged}) and its root filesystem mounted
            at TARGET (default: its merged/ dir): the image's layers read-only below, the container's
            upper dir on top. Writes go to the upper dir; `layertool commit` turns them into a layer.

            Drivers: overlay is the kernel's overlayfs (the new mount API with one lowerdir+ per layer, so
            the kernel's full 500-layer stack mounts; mount(2) with short l/ links on kernels before 6.8);
            fuse is LayerKit's userspace union over FUSE, for where overlayfs cannot be mounted; auto
            (the default) tries overlay, then fuse, and says which it used.

            With --lower, no store is involved: the dirs given are mounted as they are (top first).

            Examples:
              layertool mount busybox:latest /run/c1/rootfs --name c1
              layertool mount --read-only busybox:latest /mnt/image
              layertool mount --lower /l2 --lower /l1 --upper /u --work /w /mnt/merged
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(help: ArgumentHelp("auto, overlay or fuse.", valueName: "auto|overlay|fuse"))
    var driver: MountDriver = .auto

    @Option(name: .customLong("name"), help: ArgumentHelp("The new container's ID (default: 12 random hex digits).", valueName: "C"))
    var containerName: String?

    @Flag(help: "Mount the image read-only, with no upper dir.")
    var readOnly = false

    @Flag(help: "Mount with overlayfs's volatile option: no syncs; after a crash the container's changes are lost.")
    var volatile = false

    @Option(name: .customLong("lower"), help: ArgumentHelp("A lower dir (repeat; top first). Mounts explicit dirs instead of a store image.", valueName: "DIR"))
    var lowers: [String] = []

    @Option(help: ArgumentHelp("With --lower: the upper dir.", valueName: "DIR"))
    var upper: String?

    @Option(help: ArgumentHelp("With --lower: the work dir (empty, on the upper dir's file system).", valueName: "DIR"))
    var work: String?

    @Flag(help: "Overlay markers in user.overlay.* xattrs (for a mount in a user namespace).")
    var userxattr = false

    @Flag(help: "Print the mount spec (type, source, options) a runtime would use, and mount nothing.")
    var specOnly = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The image (or chainID) and the mount target; with --lower, only the target.", valueName: "IMAGE [TARGET]"))
    var arguments: [String] = []

    func validate() throws {
        if lowers.isEmpty {
            guard (1...2).contains(arguments.count) else { throw ValidationError("give IMAGE and optionally TARGET (or --lower DIR... TARGET)") }
            guard upper == nil, work == nil else { throw ValidationError("--upper and --work go with --lower") }
        } else {
            guard arguments.count == 1 else { throw ValidationError("with --lower, give only TARGET") }
            guard (upper == nil) == (work == nil) else { throw ValidationError("--upper and --work go together") }
            guard containerName == nil else { throw ValidationError("--name needs an IMAGE from the store, not --lower") }
        }
    }

    struct Record: Encodable {
        var container: String?
        var image: String?
        var chainID: Digest?
        var mountpoint: String?
        var driver: MountDriver
        var method: MountMethod?
        var spec: MountSpec
        var fallbackReason: String?
    }

    func run() throws {
        if !lowers.isEmpty { return try mountExplicit() }
        let opened = try store.open()
        let record: Record
        do throws(StoreError) {
            for stale in try opened.reconcileMounts() { warn(stale.description) }
            // A container that exists (unmounted after a reboot, or by `umount`) is mounted again,
            // with its changes; anything else names the image of a new container.
            if containerName == nil, let existing = try opened.container(arguments[0]), !specOnly {
                guard !existing.isMounted else {
                    throw StoreError(.invalidArgument, "container \(existing.id) is already mounted at \(existing.mountpoint ?? "?")")
                }
                let mounted = try opened.mountContainer(existing.id, at: arguments.count > 1 ? arguments[1] : nil, driver: driver,
                                                        userspace: DaemonFuseMounter())
                if let reason = mounted.fallbackReason { warn("\(reason); using the FUSE driver") }
                return printRecord(Record(container: existing.id, image: existing.image, chainID: existing.chainID,
                                          mountpoint: mounted.mountpoint, driver: mounted.driver, method: mounted.method,
                                          spec: mounted.spec, fallbackReason: mounted.fallbackReason))
            }
            let container = try opened.createContainer(id: containerName, base: arguments[0], readOnly: readOnly,
                                                       volatile: volatile, driver: driver)
            if specOnly {
                let request = try opened.mountRequest(for: container)
                record = Record(container: container.id, image: container.image, chainID: container.chainID, mountpoint: nil,
                                driver: .overlay, method: nil, spec: request.spec, fallbackReason: nil)
            } else {
                let mounted: ContainerMount
                do throws(StoreError) {
                    mounted = try opened.mountContainer(container.id, at: arguments.count > 1 ? arguments[1] : nil, driver: driver,
                                                        userspace: DaemonFuseMounter())
                } catch {
                    // A container that never mounted is not kept (its ID stays free for a retry).
                    try? opened.removeContainers([container.id])
                    throw error
                }
                if let reason = mounted.fallbackReason { warn("\(reason); using the FUSE driver") }
                record = Record(container: container.id, image: container.image, chainID: container.chainID,
                                mountpoint: mounted.mountpoint, driver: mounted.driver, method: mounted.method,
                                spec: mounted.spec, fallbackReason: mounted.fallbackReason)
            }
        } catch {
            throw fail(error)
        }
        printRecord(record)
    }

    private func mountExplicit() throws {
        let target = arguments[0]
        let request = OverlayMountRequest(lowerDirs: lowers.map(absolute), upperDir: upper.map(absolute), workDir: work.map(absolute),
                                          readOnly: readOnly, volatile: volatile, userXattr: userxattr)
        if specOnly {
            return printRecord(Record(driver: .overlay, spec: request.spec))
        }
        let outcome: MountOutcome
        do throws(MountError) {
            outcome = try UnionMounter.mount(request, at: absolute(target), driver: driver, userspace: DaemonFuseMounter(),
                                             options: ToolEnvironment.mountOptions())
        } catch {
            throw fail(StoreError(error))
        }
        if let reason = outcome.fallbackReason { warn("\(reason); using the FUSE driver") }
        printRecord(Record(mountpoint: absolute(target), driver: outcome.driver, method: outcome.method, spec: request.spec,
                           fallbackReason: outcome.fallbackReason))
    }

    private func printRecord(_ record: Record) {
        if json { return print(Output.json(record)) }
        var lines = [String]()
        if let id = record.container { lines.append("container   \(id)") }
        if let image = record.image { lines.append("image       \(image)") }
        if let chainID = record.chainID { lines.append("chainID     \(chainID)") }
        if let mountpoint = record.mountpoint {
            lines.append("mountpoint  \(mountpoint)")
            lines.append("driver      \(record.driver.rawValue)\(record.method.map { $0 == .fuse ? "" : " (\($0.rawValue))" } ?? "")")
        } else {
            lines.append("spec        \(record.spec.commandLine)")
        }
        print(lines.joined(separator: "\n"))
    }

    private func warn(_ text: String) {
        FileHandle.standardError.write(Data("layertool: \(text)\n".utf8))
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

extension MountDriver: ExpressibleByArgument {}
