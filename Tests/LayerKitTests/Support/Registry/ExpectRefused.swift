import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Checks a failed pull: one line, status 1, DEST not created, no secret in the output.
func expectRefused(_ r: ProcessResult, dest: String, mentioning words: [String],
                           secrets: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 1, "status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.split(separator: "\n").count == 1, "expected one line: \(r.stderr)", sourceLocation: sourceLocation)
    for word in words { #expect(r.stderr.contains(word), "\"\(word)\" missing from: \(r.stderr)", sourceLocation: sourceLocation) }
    for secret in secrets {
        #expect(!r.stderr.contains(secret) && !r.stdout.contains(secret), "a secret was printed: \(r.stderr)", sourceLocation: sourceLocation)
    }
    #expect(access(dest, F_OK) != 0, "DEST was created", sourceLocation: sourceLocation)
    let parent = (dest as NSString).deletingLastPathComponent
    #expect(RegistryEnvironment.leftovers(in: parent).isEmpty, sourceLocation: sourceLocation)
}
