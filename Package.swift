// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "portcullis",
    // Linux only: the code uses Glibc, epoll, eventfd, libxcrypt and pthread affinity directly, so no Apple platform
    // builds it. SwiftPM's `platforms` can only name Apple platforms (and their minimum versions); there is no Linux
    // entry to declare, so the list is left out rather than naming macOS, which never built.
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
        // Only so that the separate fuzzing package (Fuzz/Package.swift) can depend on the modules by path: SwiftPM
        // lets another package use a target only through a product. Nothing outside this repository uses it.
        .library(
            name: "PortcullisModules",
            targets: [
                "GatewayJSON", "GatewayConfig", "GatewayTokens", "GatewaySessions", "CurlNIO", "GatewayProxy", "GatewayControl",
                "GatewayKeySets", "GatewayTokenService", "GatewayServer",
            ]
        ),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // TLS and HTTP/2 on the data listener (DESIGN §11).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
    ],
    targets: [
        // libcurl through a system-library target; the shim header wraps the variadic C API.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        // libxcrypt's crypt_r for password hashes.
        .systemLibrary(name: "CCrypt", pkgConfig: "libxcrypt", providers: [.apt(["libcrypt-dev"])]),
        // SQLite 3 for the embedded session store; the shim header wraps the cast macros (SQLITE_TRANSIENT).
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // Linux facts Swift cannot reach directly (CPU affinity).
        .systemLibrary(name: "CPlatform"),
        // Strict RFC 8259 JSON: duplicate members, depth and size limits, JSON-path errors.
        .target(name: "GatewayJSON", swiftSettings: swiftSettings),
        // gateway.json: model, ${ENV} substitution, validation, defaults.
        .target(name: "GatewayConfig", dependencies: ["GatewayJSON"], swiftSettings: swiftSettings),
        // JOSE/JWT verification on swift-crypto primitives.
        .target(
            name: "GatewayTokens",
            dependencies: [
                "GatewayJSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Issuing: signing keys, access tokens (login, refresh and revocation to come).
        .target(
            name: "GatewaySessions",
            dependencies: [
                "GatewayTokens", "GatewayJSON", "GatewayConfig", "CCrypt", "CSQLite",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                // The shared store of a fleet (DESIGN §9).
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // libcurl's multi interface driven on NIO event loops.
        .target(
            name: "CurlNIO",
            dependencies: [
                "CCurl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The data path: channel handler, request state machine, routes, header policy, errors.
        .target(
            name: "GatewayProxy",
            dependencies: [
                "CurlNIO", "GatewayTokens", "GatewayConfig", "GatewayJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // SHA-1 for the WebSocket handshake's Sec-WebSocket-Accept.
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Control-plane pieces the key sets, the token service and the assembly share: readiness conditions, the
        // metrics registry, every loop's context, the wall clock. Small on purpose, so the modules above it only
        // depend downwards.
        .target(
            name: "GatewayControl",
            dependencies: [
                "GatewayProxy", "GatewayTokens", "GatewayJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Remote key sets: issuer metadata (discovery) and JWKS fetching through libcurl, the refresh schedule
        // (Cache-Control), key-set changes, publishing new verifiers to the loops; the static key table.
        .target(
            name: "GatewayKeySets",
            dependencies: [
                "GatewayControl", "GatewayProxy", "GatewayTokens", "GatewayConfig", "CurlNIO", "GatewayJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The token service at run time: its endpoints, keys, users, credential checks, the session store's
        // opening, and revocations across processes (the log's sync, the feed and its followers).
        .target(
            name: "GatewayTokenService",
            dependencies: [
                "GatewayControl", "GatewayProxy", "GatewaySessions", "GatewayTokens", "GatewayConfig", "CurlNIO", "GatewayJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Assembly: listeners, admin endpoints, generations and reload, logging; startup, signals,
        // reload and drain run as services of one swift-service-lifecycle ServiceGroup.
        .target(
            name: "GatewayServer",
            dependencies: [
                "GatewayControl", "GatewayKeySets", "GatewayTokenService",
                "GatewayProxy", "GatewayTokens", "GatewaySessions", "GatewayConfig", "CurlNIO", "GatewayJSON", "CPlatform",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "portcullis",
            dependencies: [
                "GatewayServer", "GatewayKeySets", "GatewayTokenService", "GatewayConfig", "GatewaySessions",
                "GatewayTokens",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "GatewayJSONTests", dependencies: ["GatewayJSON"], swiftSettings: swiftSettings),
        .testTarget(
            name: "GatewayConfigTests",
            dependencies: ["GatewayConfig", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewaySessionsTests",
            dependencies: [
                "GatewaySessions", "GatewayTokens", "GatewayJSON", "GatewayConfig",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "GatewayTokensTests",
            dependencies: [
                "GatewayTokens", "GatewayJSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            resources: [.copy("Vectors")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CurlNIOTests",
            dependencies: [
                "CurlNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayTokenServiceTests",
            dependencies: [
                "GatewayTokenService", "GatewayControl", "GatewayProxy", "GatewaySessions", "GatewayConfig", "GatewayJSON", "CurlNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayServerTests",
            dependencies: [
                "GatewayServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayProxyTests",
            dependencies: [
                "GatewayProxy", "GatewayConfig", "GatewayTokens", "GatewayJSON", "CurlNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
