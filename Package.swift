// swift-tools-version: 6.1
import PackageDescription

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
]

let package = Package(
    name: "Rapport",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SQLite", targets: ["SQLite"]),
        .library(name: "Postgres", targets: ["Postgres"]),
        .library(name: "SyncModel", targets: ["SyncModel"]),
        .library(name: "ReplicaStore", targets: ["ReplicaStore"]),
        .library(name: "TLS", targets: ["TLS"]),
        .library(name: "SyncProtocol", targets: ["SyncProtocol"]),
        .library(name: "Registry", targets: ["Registry"]),
        .library(name: "RapportServer", targets: ["RapportServer"]),
        .library(name: "RapportClient", targets: ["RapportClient"]),
        .executable(name: "rapportd", targets: ["rapportd"]),
        .executable(name: "rapport", targets: ["rapport"]),
        .executable(name: "rapportctl", targets: ["rapportctl"]),
        .executable(name: "rapport-bench", targets: ["rapport-bench"]),
        .executable(name: "rapport-fuzz", targets: ["rapport-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // System libraries and the C shim for OpenSSL macros Swift cannot call.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .target(name: "CRapportOpenSSLShim", dependencies: ["COpenSSL"]),

        // Libraries, lowest layer first.
        // Owner-only files and folders, for everything Rapport writes.
        .target(name: "PrivateFiles"),
        // The few things SQL code needs from a database, so that code written once (the registry)
        // runs on SQLite and on PostgreSQL.
        .target(name: "SQLBackend"),
        .target(name: "SQLite", dependencies: ["CSQLite", "PrivateFiles", "SQLBackend"]),
        // The server tier's store when a customer base outgrows one machine: libpq, synchronous
        // like SQLite, because the stores above it are (see PostgresConnection).
        .target(name: "Postgres", dependencies: ["CPostgres", "SQLBackend"]),
        .target(name: "SyncModel"),
        // Roles and rights: who may read and write which records; pure, run by server and device alike.
        .target(name: "Access", dependencies: ["SyncModel"]),
        .target(name: "ReplicaStore", dependencies: ["Access", "SQLite", "SyncModel"]),
        .target(name: "TLS", dependencies: ["COpenSSL", "CRapportOpenSSLShim", "PrivateFiles", .product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "SyncProtocol",
            dependencies: [
                "Access", "SyncModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        .target(name: "CRM", dependencies: ["Access", "PrivateFiles", "ReplicaStore", "SyncModel"]),
        // The registry of tenants, users and devices, and the tenant files of a data directory.
        .target(name: "Registry", dependencies: ["Access", "PrivateFiles", "Postgres", "SQLite", "SyncModel", "ReplicaStore", "TLS"]),
        .target(
            name: "RapportServer",
            dependencies: [
                "Access", "Postgres", "PrivateFiles", "RapportClient", "ReplicaStore", "Registry", "SQLite", "SyncModel", "SyncProtocol", "TLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ] + nio
        ),

        // The HTTP/JSON integration API rapportd serves beside sync: Hummingbird's HTTP/1 handlers
        // behind the project's own TLSHandler, records and the change feed through RapportServer.
        .target(
            name: "RapportAPI",
            dependencies: [
                "Access", "RapportDevice", "RapportServer", "ReplicaStore", "Registry", "SyncModel", "TLS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ] + nio
        ),

        .target(
            name: "RapportClient",
            dependencies: [
                "Access", "ReplicaStore", "SyncModel", "SyncProtocol", "TLS", "CRM",
                .product(name: "Logging", package: "swift-log"),
            ] + nio
        ),

        .target(
            name: "RapportDevice",
            dependencies: [
                "Access", "PrivateFiles", "RapportClient", "ReplicaStore", "SyncModel", "SyncProtocol", "CRM", "TLS",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Executables.
        .executableTarget(
            name: "rapport",
            dependencies: [
                "RapportDevice", "RapportClient", "ReplicaStore", "SyncModel", "CRM", "TLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "rapportd",
            dependencies: [
                "Postgres", "PrivateFiles", "RapportAPI", "RapportServer", "Registry", "ReplicaStore", "CRM", "TLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ] + nio
        ),
        .executableTarget(
            name: "rapportctl",
            dependencies: [
                "Access", "Postgres", "PrivateFiles", "Registry", "ReplicaStore", "SQLite", "SyncModel", "CRM", "RapportDevice",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "rapport-bench",
            dependencies: [
                "RapportServer", "Registry", "ReplicaStore", "SQLite", "SyncModel", "SyncProtocol", "RapportClient", "CRM", "TLS",
                "TestSupport", .product(name: "Logging", package: "swift-log"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ] + nio + [
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Fuzz targets for what a peer's bytes reach first: frames, messages, records. Built
        // with -DRAPPORT_FUZZ and -sanitize=fuzzer it is a libFuzzer binary (scripts/fuzz.sh);
        // otherwise a plain tool that replays inputs, or mutates them at random, through the
        // same checks (scripts/fuzz.sh --quick).
        .executableTarget(
            name: "rapport-fuzz",
            dependencies: [
                "SyncModel", "SyncProtocol", "CRM",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // Tests.
        // Support for tests and benchmarks: temp directories, seeded randomness, server processes.
        .target(name: "TestSupport", dependencies: [
            "PrivateFiles", "TLS", "Registry", "SyncModel", "SyncProtocol", "Postgres", .product(name: "NIOHTTP1", package: "swift-nio"),
        ] + nio, path: "Tests/TestSupport"),
        // Where tests run: a trait that takes long synchronous tests off Swift's shared pool.
        .target(name: "TestScheduling", path: "Tests/TestScheduling"),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "SQLBackend", "SQLite", "TestSupport", "TestScheduling"]),
        .testTarget(name: "SQLiteTests", dependencies: ["SQLite", "PrivateFiles", "TestSupport", "TestScheduling"]),
        .testTarget(name: "SyncModelTests", dependencies: [
            "SyncModel", "TestSupport", "TestScheduling",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "ReplicaStoreTests", dependencies: [
            "Access", "Postgres", "ReplicaStore", "SQLite", "SyncModel", "TestSupport", "TestScheduling",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "CRMTests", dependencies: ["Access", "CRM", "ReplicaStore", "SyncModel", "TestSupport", "TestScheduling"]),
        .testTarget(name: "RapportServerTests", dependencies: [
            "Access", "RapportServer", "RapportClient", "SyncProtocol", "SyncModel", "ReplicaStore", "CRM", "TLS", "TestSupport", "TestScheduling",
            "PrivateFiles", "Registry", "SQLite",
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ] + nio),
        .testTarget(name: "RapportDeviceTests", dependencies: [
            "Access", "RapportDevice", "RapportClient", "RapportServer", "ReplicaStore", "SyncModel", "SyncProtocol", "CRM", "TLS", "TestSupport", "TestScheduling",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "RegistryTests", dependencies: ["Postgres", "Registry", "ReplicaStore", "SQLite", "SyncModel", "CRM", "TestSupport", "TestScheduling"]),
        .testTarget(name: "SyncProtocolTests", dependencies: ["SyncProtocol", "SyncModel", "TestSupport", "TestScheduling", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "TLSTests", dependencies: ["TLS", .product(name: "NIOEmbedded", package: "swift-nio")] + nio),
    ],
    swiftLanguageModes: [.v6]
)
