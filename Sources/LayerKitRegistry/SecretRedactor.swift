import Foundation

/// The secrets a client holds (a password, tokens), so that no message built from what a
/// registry said can carry one of them out, even when a hostile server echoes them back.
final class SecretRedactor: @unchecked Sendable {
    private let lock = NSLock()
    private var secrets = Set<String>()

    func add(_ secret: String) {
        // Very short strings would redact ordinary words; real secrets are longer.
        guard secret.count >= 4 else { return }
        lock.lock()
        secrets.insert(secret)
        lock.unlock()
    }

    func clean(_ text: String) -> String {
        lock.lock()
        let all = secrets
        lock.unlock()
        var out = text
        for secret in all.sorted(by: { $0.count > $1.count }) where out.contains(secret) {
            out = out.replacingOccurrences(of: secret, with: "<redacted>")
        }
        return out
    }

    func clean(_ error: RegistryError) -> RegistryError {
        var copy = error
        copy.message = clean(copy.message)
        copy.code = copy.code.map(clean)
        copy.reference = copy.reference.map(clean)
        return copy
    }
}
