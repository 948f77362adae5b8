import CLayerSys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file whose metadata cannot tell whether it changed.
struct PendingCompare {
    let path: EntryPath
    let st: stat
}

/// Compares file contents on a second thread while the tree walk feeds it; the walking thread
/// joins in once the walk is done.
final class ContentComparer: @unchecked Sendable {
    private let lock = NSCondition()
    private var items: [PendingCompare] = []
    private var results: [Int8] = []
    private var next = 0
    private var adding = true
    private var busy = 0
    private var workerDone = false
    let oldFD: Int32
    let newFD: Int32

    init(oldFD: Int32, newFD: Int32) {
        self.oldFD = oldFD
        self.newFD = newFD
    }

    func add(_ item: PendingCompare) {
        lock.lock()
        items.append(item)
        results.append(0)
        if items.count - next >= 32 { lock.signal() }
        lock.unlock()
    }

    func start() {
        let t = Thread { [self] in
            self.work()
            self.lock.lock()
            self.workerDone = true
            self.lock.broadcast()
            self.lock.unlock()
        }
        t.name = "layerkit-compare"
        t.start()
    }

    private func claim() -> (Int, [PendingCompare])? {
        lock.lock()
        defer { lock.unlock() }
        while adding && items.count - next < 32 { lock.wait() }
        guard next < items.count else { return nil }
        let end = min(next + 64, items.count)
        let batch = Array(items[next..<end])
        let start = next
        next = end
        busy += 1
        return (start, batch)
    }

    private func work() {
        let a = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64)
        let b = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 64)
        defer { a.deallocate(); b.deallocate() }
        while let (start, batch) = claim() {
            let r = batch.map { Self.sameBytes($0, oldFD: oldFD, newFD: newFD, buffers: (a, b)) }
            lock.lock()
            for (i, v) in r.enumerated() { results[start + i] = v }
            busy -= 1
            lock.broadcast()
            lock.unlock()
        }
    }

    /// Ends the feeding, helps with what is left, and returns every item with its result
    /// (0 same, 1 differs, -1 unreadable).
    func finish() -> [(PendingCompare, Int8)] {
        lock.lock()
        adding = false
        lock.broadcast()
        lock.unlock()
        work()
        lock.lock()
        while busy > 0 || !workerDone { lock.wait() }
        let out = Array(zip(items, results))
        lock.unlock()
        return out
    }

    /// 0 when both files hold the same bytes, 1 when not, -1 on an error. Reads exactly the known
    /// size (one read per small file, no read for the end).
    static func sameBytes(_ item: PendingCompare, oldFD: Int32, newFD: Int32,
                          buffers: (UnsafeMutableRawPointer, UnsafeMutableRawPointer)) -> Int8 {
        let noAtime: Int32 = 0o1000000   // O_NOATIME (not imported: it needs _GNU_SOURCE)
        func open(_ root: Int32) -> Int32 {
            var fd = FileSystem.openBeneath(root, item.path.bytes, flags: O_RDONLY | O_NOFOLLOW | noAtime)
            if fd < 0 && errno == EPERM { fd = FileSystem.openBeneath(root, item.path.bytes, flags: O_RDONLY | O_NOFOLLOW) }
            return fd
        }
        let fa = open(oldFD)
        let fb = open(newFD)
        defer { if fa >= 0 { close(fa) }; if fb >= 0 { close(fb) } }
        guard fa >= 0, fb >= 0 else { return -1 }
        var offset: Int64 = 0
        let size = Int64(item.st.st_size)
        while offset < size {
            let want = Int(min(Int64(1 << 16), size - offset))
            let na = pread(fa, buffers.0, want, off_t(offset))
            let nb = pread(fb, buffers.1, want, off_t(offset))
            if na < 0 || nb < 0 { return -1 }
            if na != nb || na == 0 { return 1 }
            if memcmp(buffers.0, buffers.1, na) != 0 { return 1 }
            offset += Int64(na)
        }
        return 0
    }
}
