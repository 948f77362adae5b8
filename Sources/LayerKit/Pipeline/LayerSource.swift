import CArchive
import CLayerSys
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where a layer blob comes from.
public enum LayerSource: Sendable {
    /// A file on disk.
    case path(String)
    /// An open file descriptor (for example 0 for standard input); it is read to its end, not closed.
    case fileDescriptor(Int32)
    /// A blob of an OCI image layout, opened inside the layout (a symlink cannot lead out of it)
    /// and read up to its descriptor's size, no further.
    case layoutBlob(OCIImageLayout, Descriptor)
    /// A blob that arrives over time (a download), read as it comes, exactly `LayerStream.size`
    /// bytes. A stream is read once.
    case stream(LayerStream)
}

extension LayerSource {
    var displayName: String {
        switch self {
        case .path(let p): return p
        case .fileDescriptor(0): return "-"
        case .fileDescriptor(let fd): return "fd \(fd)"
        case .layoutBlob(let layout, let descriptor): return "\(layout.path)@\(descriptor.digest)"
        case .stream: return "stream"
        }
    }
}
