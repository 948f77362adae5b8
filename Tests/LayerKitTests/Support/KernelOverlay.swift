import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one probe for kernel overlayfs (`Requirement.kernelOverlay`).
enum KernelOverlay {
    /// Whether the kernel has overlayfs, loading the module first if it is not listed yet (which
    /// takes root; without it the probe only reads /proc/filesystems).
    static let available: Bool = {
        if listed() { return true }
        if let modprobe = which("modprobe") ?? ["/sbin/modprobe", "/usr/sbin/modprobe"].first(where: { access($0, X_OK) == 0 }) {
            _ = try? run(modprobe, ["overlay"])
        }
        return listed()
    }()

    /// `grep -qw overlay /proc/filesystems`.
    private static func listed() -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { $0.split(whereSeparator: { $0 == "\t" || $0 == " " }).last == "overlay" }
    }
}
