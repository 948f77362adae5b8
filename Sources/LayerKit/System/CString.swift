/// Runs `body` with a NUL-terminated copy of `bytes` (on the stack for short names): paths in
/// layers are raw bytes, not necessarily UTF-8, and reach the kernel as they are.
@inline(__always)
func withCString<C: Collection, R>(_ bytes: C, _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R where C.Element == UInt8 {
    let count = bytes.count
    return try withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer in
        var i = 0
        for b in bytes {
            buffer[i] = CChar(bitPattern: b)
            i += 1
        }
        buffer[count] = 0
        return try body(UnsafePointer(buffer.baseAddress!))
    }
}

/// `withUnsafeBytes` for a body with typed throws (the standard one rethrows untyped errors).
func withBytes<E: Error>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(E) -> Void) throws(E) {
    var failure: E?
    bytes.withUnsafeBytes { b in
        do throws(E) { try body(b) } catch { failure = error }
    }
    if let failure { throw failure }
}
