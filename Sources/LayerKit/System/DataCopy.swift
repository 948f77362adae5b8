import CLayerSys
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Copying file contents in the kernel where it can (`copy_file_range`: reflinks on file systems
/// that share extents, an in-kernel copy elsewhere), with read/write where it cannot.
enum DataCopy {
    /// Copies `size` bytes from the start of `input` to `output`, keeping holes: only the data
    /// extents (`SEEK_DATA`/`SEEK_HOLE`) are copied; the output ends up exactly `size` bytes long.
    static func copySparse(from input: Int32, to output: Int32, size: Int64) throws(Errno) {
        var offset: off_t = 0
        var inKernel = true
        var buffer: UnsafeMutableRawPointer?
        defer { buffer?.deallocate() }
        while offset < size {
            var dataStart = lseek(input, offset, 3 /* SEEK_DATA */)
            if dataStart < 0 {
                if errno == ENXIO { break }   // only a hole is left
                dataStart = offset             // no SEEK_DATA support: copy everything
            }
            var dataEnd = lseek(input, dataStart, 4 /* SEEK_HOLE */)
            if dataEnd < 0 { dataEnd = off_t(size) }
            dataEnd = min(dataEnd, off_t(size))
            var position = dataStart
            while position < dataEnd {
                let chunk = Int(min(Int64(dataEnd) - Int64(position), Int64(1 << 30)))
                if inKernel {
                    var inOffset = Int64(position), outOffset = Int64(position)
                    let n = lk_copy_file_range_at(input, &inOffset, output, &outOffset, chunk)
                    if n > 0 { position += off_t(n); continue }
                    if n == 0 { break }
                    if errno == EINTR { continue }
                    guard Self.meansNoInKernelCopy(errno) else { throw Errno(rawValue: errno) }
                    inKernel = false
                }
                if buffer == nil { buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096) }
                let n = pread(input, buffer, min(chunk, 1 << 20), position)
                if n < 0 { if errno == EINTR { continue }; throw Errno(rawValue: errno) }
                if n == 0 { break }
                try writeAll(output, buffer!, n, at: position)
                position += off_t(n)
            }
            offset = dataEnd
        }
        if ftruncate(output, off_t(size)) != 0 { throw Errno(rawValue: errno) }
    }

    /// Copies everything from `input`'s current offset to its end onto `output`'s current offset.
    /// Returns the bytes copied.
    @discardableResult
    static func copyAll(from input: Int32, to output: Int32) throws(Errno) -> Int64 {
        var total: Int64 = 0
        while true {
            let n = lk_copy_file_range(input, output, 1 << 30)
            if n > 0 { total += Int64(n); continue }
            if n == 0 { return total }
            if errno == EINTR { continue }
            // Nothing copied yet and no in-kernel copy between these files: plain reads and writes.
            guard total == 0, meansNoInKernelCopy(errno) else { throw Errno(rawValue: errno) }
            break
        }
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, size)
            if n < 0 { if errno == EINTR { continue }; throw Errno(rawValue: errno) }
            if n == 0 { return total }
            try writeAll(output, buffer, n, at: nil)
            total += Int64(n)
        }
    }

    /// Writes all `count` bytes (at `offset`, or at the file's offset), retrying short writes.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int, at offset: off_t?) throws(Errno) {
        var done = 0
        while done < count {
            let n = offset.map { pwrite(fd, bytes + done, count - done, $0 + off_t(done)) } ?? write(fd, bytes + done, count - done)
            if n < 0 { if errno == EINTR { continue }; throw Errno(rawValue: errno) }
            done += n
        }
    }

    private static func meansNoInKernelCopy(_ code: Int32) -> Bool {
        code == EXDEV || code == EINVAL || code == ENOSYS || code == EOPNOTSUPP
    }
}
