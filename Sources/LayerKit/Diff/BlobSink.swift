import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where compressed output goes: hashed (the blob digest), counted, written to a file descriptor.
final class BlobSink {
    let fd: Int32
    let hashing: Bool
    private(set) var hasher = SHA256Hasher()
    private(set) var size: Int64 = 0

    init(fd: Int32, hashing: Bool = true) {
        self.fd = fd
        self.hashing = hashing
    }

    func write(_ bytes: [UInt8]) throws(LayerError) {
        try withBytes(bytes) { (b) throws(LayerError) in try write(b) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(LayerError) {
        guard !bytes.isEmpty else { return }
        if hashing { hasher.update(bytes) }
        size += Int64(bytes.count)
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw LayerError(.system(Errno(rawValue: errno)), "cannot write the layer: \(Errno(rawValue: errno).description)")
            }
            done += n
        }
    }
}
