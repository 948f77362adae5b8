import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory (under `$LAYERKIT_TEST_TMP` when set), removed with everything in
/// it when the value is released.
final class TempDir {
    let path: String

    init(_ label: String = "layerkit-test") {
        let base = ProcessInfo.processInfo.environment["LAYERKIT_TEST_TMP"] ?? NSTemporaryDirectory()
        var template = Array("\(base)/\(label)-XXXXXX".utf8CString)
        path = String(cString: mkdtemp(&template)!)
    }

    /// The path of `name` in the dir (nothing is created).
    func sub(_ name: String) -> String { path + "/" + name }

    /// Creates `name` (and its parents) in the dir; returns its path.
    @discardableResult
    func mkdir(_ name: String) -> String {
        let p = sub(name)
        try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
