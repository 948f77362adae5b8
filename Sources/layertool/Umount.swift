import ArgumentParser
import Foundation
import LayerKit
import LayerKitFUSE

struct Umount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount a container's root filesystem (by mount point or container ID), or any mount made by `mount --lower`.",
        discussion: """
            The container stays (its upper dir keeps its changes): mount it again, commit it, or
            remove it with `layertool rm`. A container whose mount is already gone (its process
            crashed, its mount namespace ended) has its record corrected, with a warning.

            Examples:
              layertool umount /run/c1/rootfs
              layertool umount c1
            """
    )

    @OptionGroup var store: StoreOptions

    @Flag(help: "Detach a busy mount now; the kernel finishes when its last user goes (MNT_DETACH).")
    var detach = false

    @Argument(help: ArgumentHelp("Mount points or container IDs.", valueName: "TARGET|CONTAINER"))
    var targets: [String]

    func validate() throws {
        guard !targets.isEmpty else { throw ValidationError("name at least one TARGET or CONTAINER") }
    }

    func run() throws {
        let opened = try store.openExisting()
        do throws(StoreError) {
            if let opened {
                for stale in try opened.reconcileMounts() { warn(stale.description) }
            }
            for target in targets {
                if let opened, let container = try opened.container(target) {
                    guard container.isMounted else {
                        throw StoreError(.invalidArgument, "container \(container.id) is not mounted")
                    }
                    let mountpoint = container.mountpoint ?? target
                    try opened.unmountContainer(container.id, detach: detach)
                    print("unmounted \(mountpoint) (container \(container.id))")
                } else {
                    // Only what layertool mounts: an overlay, the FUSE union, or a layer's read-only bind.
                    let table = MountTable.current()
                    guard let entry = table.mount(at: target), entry.mountPoint != "/",
                          entry.fileSystemType == "overlay" || entry.fileSystemType == "fuse.\(FuseUnionServer.subtype)" else {
                        throw StoreError(.invalidArgument, path: target, "not a mount layertool made (an overlay or its FUSE union): not unmounting it")
                    }
                    do throws(MountError) { try OverlayMounter.unmount(target, detach: detach) } catch { throw StoreError(error) }
                    print("unmounted \(target)")
                }
            }
        } catch {
            throw fail(error)
        }
    }

    private func warn(_ text: String) {
        FileHandle.standardError.write(Data("layertool: \(text)\n".utf8))
    }
}
