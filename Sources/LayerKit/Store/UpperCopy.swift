import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A container's upper dir copied into a staging dir on a thread of its own, as a store layer
/// (see `LayerStore.commit`): the xattrs a layer carries and the store's opaque markers go with
/// it, overlayfs's other state (origin, impure...) and sockets do not. An aufs-form upper
/// (`.wh.` names) stops the copy: it is not a layer dir as it is.
final class UpperCopy: @unchecked Sendable {
    private let sourceFD: Int32
    private let targetFD: Int32
    private let opaque: String
    private let done = DispatchSemaphore(value: 0)
    /// The copy's size on disk once done; nil when it stopped.
    private var result: Int64?

    init(upper: String, into target: String, namespace: OverlayXattrNamespace) throws(StoreError) {
        guard mkdir(target, 0o755) == 0 else { throw .lastErrno(path: target, "cannot create directory") }
        sourceFD = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard sourceFD >= 0 else { throw .lastErrno(path: upper, "cannot open") }
        targetFD = open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard targetFD >= 0 else {
            close(sourceFD)
            throw .lastErrno(path: target, "cannot open")
        }
        opaque = namespace.opaque
    }

    deinit {
        close(sourceFD)
        close(targetFD)
    }

    func start() {
        let thread = Thread { [self] in
            let policy = XattrPolicy()
            let opaque = self.opaque
            var copier = TreeCopier(keepsXattr: { $0 == opaque || policy.carries($0) })
            copier.refusesMarkerNames = true
            copier.whiteoutTime = timespec(tv_sec: 0, tv_nsec: 0)   // what the layer's whiteout markers say
            self.result = try? copier.copy(from: sourceFD, to: targetFD)
            self.done.signal()
        }
        thread.name = "layerkit-commit-copy"
        thread.stackSize = BlockingWork.stackSize
        thread.start()
    }

    /// Waits for the copy; its size, or nil when it stopped.
    @discardableResult
    func wait() -> Int64? {
        done.wait()
        done.signal()   // a second wait returns at once
        return result
    }
}
