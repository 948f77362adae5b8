import Foundation
@testable import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Applies `layers` (each a list of entries, written as a tar beside `dir` and removed after) in
/// order onto `dir` with `LayerApplier`; returns their summaries.
@discardableResult
func applyLayers(_ layers: [[TarEntry]], onto dir: String, options: ApplyOptions = ApplyOptions(),
                 compression: TestCompression = .none) throws -> [LayerSummary] {
    var summaries = [LayerSummary]()
    for (i, entries) in layers.enumerated() {
        let blob = TarBuilder.write(entries, to: dir + ".layer\(i)", compression: compression)
        defer { unlink(blob) }
        summaries.append(try LayerApplier(options: options).apply(.path(blob), to: dir))
    }
    return summaries
}
