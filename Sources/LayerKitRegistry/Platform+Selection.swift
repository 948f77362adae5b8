import LayerKit

/// Picking the manifest for a platform out of an index: `--platform os/arch[/variant]`, by
/// default `Platform.host`.
extension Platform {
    /// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`); uname's
    /// names (`x86_64`, `aarch64`) are taken for OCI's.
    public init(parsing text: String) throws(RegistryError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map { $0.lowercased() }
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" } }) else {
            throw RegistryError(.invalidReference, reference: text, "a platform is os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")
        }
        self.init(os: parts[0], architecture: Self.ociArchitecture(parts[1]), variant: parts.count == 3 ? parts[2] : nil)
    }

    /// The manifest for this platform among an index's entries: an entry whose variant is the
    /// same (a missing variant taken as the architecture's default, `v8` for arm64 and `v7` for
    /// arm) first, then any entry this platform `accepts`. Entries without a platform are taken
    /// only when they are the index's only entry.
    public func select(from manifests: [Descriptor]) -> Descriptor? {
        let candidates = manifests.filter { entry in entry.platform.map { accepts($0) } ?? false }
        let wanted = variant ?? Self.defaultVariant(architecture)
        if let exact = candidates.first(where: { ($0.platform?.variant ?? Self.defaultVariant(architecture)) == wanted }) {
            return exact
        }
        if let first = candidates.first { return first }
        if manifests.count == 1, manifests[0].platform == nil { return manifests[0] }
        return nil
    }

    static func ociArchitecture(_ name: String) -> String {
        switch name {
        case "x86_64", "x86-64": return "amd64"
        case "aarch64": return "arm64"
        case "i386", "i686": return "386"
        case "armhf", "armel": return "arm"
        default: return name
        }
    }

    static func defaultVariant(_ architecture: String) -> String? {
        switch architecture {
        case "arm64": return "v8"
        case "arm": return "v7"
        default: return nil
        }
    }
}
