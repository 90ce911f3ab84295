// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for every parser that sees outside bytes (issue 13, DESIGN §12). A package of its own, so that
// `swift build` / `swift test` of the gateway never build the fuzzers; `scripts/fuzz` builds this one with
// `-sanitize=fuzzer,address` on every Swift module (the gateway's and its dependencies'), which gives libFuzzer
// its coverage feedback and AddressSanitizer its checks. The targets reach internal parsers through
// `@testable import`, which a debug build allows (SwiftPM compiles every module with `-enable-testing` there), so
// the gateway's sources need no fuzzing-only entry points.
let package = Package(
    name: "portcullis-fuzz",
    dependencies: [
        .package(name: "portcullis", path: ".."),
        // The same packages (and versions) the gateway resolves; named here because the targets import them too.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: [
        // One binary for all targets: one link instead of one per target (linking NIO, swift-crypto and BoringSSL
        // with ASan dominates the build). `--target=NAME` (or PORTCULLIS_FUZZ_TARGET) picks the target.
        .executableTarget(
            name: "PortcullisFuzz",
            dependencies: [
                .product(name: "PortcullisModules", package: "portcullis"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: [
                .enableUpcomingFeature("ExistentialAny"),
                .enableUpcomingFeature("MemberImportVisibility"),
            ]
        )
    ]
)
