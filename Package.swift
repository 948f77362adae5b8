// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "LayerKit",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "LayerKit", targets: ["LayerKit"]),
        .library(name: "LayerKitFUSE", targets: ["LayerKitFUSE"]),
        .library(name: "LayerKitRegistry", targets: ["LayerKitRegistry"]),
        .library(name: "LayerKitSnapshotter", targets: ["LayerKitSnapshotter"]),
        .executable(name: "layertool", targets: ["layertool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // `swift package generate-documentation --target LayerKit` (the DocC catalog in Sources/LayerKit).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // containerd's snapshots service over gRPC (LayerKitSnapshotter).
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        // C libraries, each behind a tiny module so the Swift code imports only what it uses.
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive",
                       providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["libz-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CIsal", pkgConfig: "libisal", providers: [.apt(["libisal-dev"])]),
        // The layer store's metadata database.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // Syscalls Glibc does not wrap (openat2, renameat2, ...) and macros Swift cannot import.
        .target(name: "CLayerSys"),
        .target(
            name: "LayerKit",
            dependencies: [
                "CArchive", "CZlib", "CZstd", "CIsal", "CLayerSys", "CSQLite",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libfuse3's low-level API, for the userspace union's FUSE frontend.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .target(name: "LayerKitFUSE", dependencies: ["LayerKit", "CFuse"]),
        // The registry client (OCI distribution): its own module, so a runtime that only
        // unpacks does not link an HTTP stack.
        .target(
            name: "LayerKitRegistry",
            dependencies: [
                "LayerKit",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // containerd's snapshots service (a proxy snapshotter plugin) on the layer store. The
        // .proto files it was generated from, and the script that regenerates the Swift code
        // (scripts/generate-snapshotter-protos.sh), are kept beside the code but not compiled.
        .target(
            name: "LayerKitSnapshotter",
            dependencies: [
                "LayerKit",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Protos"]
        ),
        .executableTarget(
            name: "layertool",
            dependencies: [
                "LayerKit", "LayerKitFUSE", "LayerKitRegistry", "LayerKitSnapshotter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "LayerKitTests",
            dependencies: [
                "LayerKit", "LayerKitFUSE", "LayerKitRegistry", "LayerKitSnapshotter", "CArchive", "CLayerSys", "layertool",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
