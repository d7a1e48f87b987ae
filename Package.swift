// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Rapport",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SQLite", targets: ["SQLite"]),
        .library(name: "SyncModel", targets: ["SyncModel"]),
        .library(name: "ReplicaStore", targets: ["ReplicaStore"]),
        .executable(name: "rapport-bench", targets: ["rapport-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(name: "SQLite", dependencies: ["CSQLite"]),
        .target(name: "SyncModel"),
        .target(name: "ReplicaStore", dependencies: ["SQLite", "SyncModel"]),
        .executableTarget(
            name: "rapport-bench",
            dependencies: [
                "ReplicaStore", "SQLite", "SyncModel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "SQLiteTests", dependencies: ["SQLite", "TestSupport"]),
        .testTarget(name: "SyncModelTests", dependencies: [
            "SyncModel", "TestSupport",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "ReplicaStoreTests", dependencies: [
            "ReplicaStore", "SQLite", "SyncModel", "TestSupport",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
