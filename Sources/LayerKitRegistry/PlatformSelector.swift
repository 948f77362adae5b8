import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// Which manifest of an index to pull: `os/arch[/variant]`, by default the host's.
public struct PlatformSelector: Sendable, Equatable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = Self.normalize(architecture: architecture)
        self.variant = variant.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`).
    public init(parsing text: String) throws(RegistryError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" } }) else {
            throw RegistryError(.invalidReference, reference: text, "a platform is os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")
        }
        self.init(os: parts[0].lowercased(), architecture: parts[1].lowercased(), variant: parts.count == 3 ? parts[2].lowercased() : nil)
    }

    /// The platform this process runs on.
    public static var host: PlatformSelector {
        var info = utsname()
        uname(&info)
        let machine = withUnsafeBytes(of: &info.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "armv7l": return PlatformSelector(os: "linux", architecture: "arm", variant: "v7")
        case "armv6l": return PlatformSelector(os: "linux", architecture: "arm", variant: "v6")
        default: return PlatformSelector(os: "linux", architecture: machine)
        }
    }

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    /// Whether a manifest for `platform` runs here.
    public func matches(_ platform: Platform) -> Bool {
        guard platform.os == os, Self.normalize(architecture: platform.architecture) == architecture else { return false }
        guard let variant else { return true }
        return Self.normalize(variant: platform.variant, architecture: architecture) == Self.normalize(variant: variant, architecture: architecture)
    }

    /// The manifest for this platform among an index's entries: an exact variant match first,
    /// then any entry for the os and architecture. Entries without a platform are taken only when
    /// they are the index's only entry.
    public func select(from manifests: [Descriptor]) -> Descriptor? {
        let candidates = manifests.filter { $0.platform.map(matches) ?? false }
        if variant == nil, let preferred = candidates.first(where: {
            Self.normalize(variant: $0.platform?.variant, architecture: architecture) == Self.defaultVariant(architecture)
        }) {
            return preferred
        }
        if let first = candidates.first { return first }
        if manifests.count == 1, manifests[0].platform == nil { return manifests[0] }
        return nil
    }

    static func normalize(architecture: String) -> String {
        switch architecture {
        case "x86_64", "x86-64": return "amd64"
        case "aarch64": return "arm64"
        case "i386", "i686": return "386"
        case "armhf", "armel": return "arm"
        default: return architecture
        }
    }

    static func defaultVariant(_ architecture: String) -> String? {
        switch architecture {
        case "arm64": return "v8"
        case "arm": return "v7"
        default: return nil
        }
    }

    static func normalize(variant: String?, architecture: String) -> String? {
        variant.flatMap { $0.isEmpty ? nil : $0 } ?? defaultVariant(architecture)
    }
}
