// swift-tools-version: 6.0
// Coverage-guided fuzz targets for LayerKit (libFuzzer through Swift's sanitizer support). They
// live in their own package so that users who link LayerKit never build them. Build and run:
//   Fuzz/run.sh                         (every target, 30 s each)
//   Fuzz/run.sh --time 3600 apply       (one target for an hour)
// which builds with: swift build -c release --sanitize fuzzer --sanitize address -Xswiftc -parse-as-library
import Foundation
import PackageDescription

// A path dependency is identified by its directory's name, whatever the clone is called.
let rootPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let layerKit = Target.Dependency.product(name: "LayerKit", package: rootPackage)

let package = Package(
    name: "LayerKitFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
    ],
    targets: [
        // What every target shares: the scratch file system, invariant checks, a tar writer.
        .target(name: "CFuzzSys"),
        .target(name: "FuzzSupport", dependencies: [layerKit, "CFuzzSys"]),
        .executableTarget(name: "FuzzApply", dependencies: [layerKit, "FuzzSupport", "CFuzzSys"]),
        .executableTarget(name: "FuzzImage", dependencies: [layerKit, "FuzzSupport", "CFuzzSys"]),
        .executableTarget(name: "FuzzUpperDiff", dependencies: [layerKit, "FuzzSupport", "CFuzzSys"]),
        .executableTarget(name: "FuzzStoreOpen", dependencies: [layerKit, "FuzzSupport", "CFuzzSys"]),
    ],
    swiftLanguageModes: [.v6]
)
