import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// An open file: the backing fd, read and written without the union's lock.
final class FuseFileHandle {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    /// The handle as FUSE's 64-bit `fh` (retained until `take`).
    func retainedFH() -> UInt64 { UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque())) }
    static func borrow(_ fh: UInt64) -> FuseFileHandle {
        Unmanaged<FuseFileHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeUnretainedValue()
    }
    static func take(_ fh: UInt64) -> FuseFileHandle {
        Unmanaged<FuseFileHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeRetainedValue()
    }
}

/// An open dir: its merged listing, taken at opendir (readdir offsets index into it).
final class FuseDirectoryHandle {
    let ino: UInt64
    var entries: [UnionDirectoryEntry]
    init(ino: UInt64, entries: [UnionDirectoryEntry]) {
        self.ino = ino
        self.entries = entries
    }

    func retainedFH() -> UInt64 { UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque())) }
    static func borrow(_ fh: UInt64) -> FuseDirectoryHandle {
        Unmanaged<FuseDirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeUnretainedValue()
    }
    static func take(_ fh: UInt64) -> FuseDirectoryHandle {
        Unmanaged<FuseDirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeRetainedValue()
    }
}
