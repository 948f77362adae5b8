import Foundation
import Testing

/// Go's `archive/tar`, as a program (`Tests/go-tar-oracle/main.go`) built for the test with
/// Debian's `go`, offline (GOPATH mode, no modules, no network), in a temp dir.
struct GoTarOracle {
    static let source = repositoryRoot + "/Tests/go-tar-oracle/main.go"
    let binary: String
    private let dir: TempDir

    init() throws {
        dir = TempDir("go-tar-oracle")
        binary = dir.sub("go-tar-oracle")
        var environment = ProcessInfo.processInfo.environment
        environment["GO111MODULE"] = "off"
        environment["GOFLAGS"] = ""
        environment["GOPROXY"] = "off"
        environment["GOCACHE"] = dir.sub("cache")
        environment["GOPATH"] = dir.sub("gopath")
        environment["CGO_ENABLED"] = "0"
        let built = try run(try requireTool("go"), ["build", "-o", binary, Self.source], environment: environment)
        try #require(built.status == 0, "go build: \(built.stderr)")
    }

    /// Go's answer for each file: nil when it reads it, else its error.
    func verdicts(_ files: [String]) throws -> [String?] {
        let result = try run(binary, files)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        try #require(result.status == 0 && lines.count == files.count,
                     "go-tar-oracle: \(lines.count) answers for \(files.count) files: \(result.stderr)")
        return lines.map { $0 == "accept" ? nil : String($0.dropFirst("reject\t".count)) }
    }

    /// Writes archives made by Go's tar.Writer into `dir`.
    func writeSamples(into dir: String) throws -> [String] {
        let result = try run(binary, ["-write", dir])
        try #require(result.status == 0, "go-tar-oracle -write: \(result.stderr)")
        return ["go-pax.tar", "go-gnu.tar", "go-ustar.tar"].map { dir + "/" + $0 }
    }
}
