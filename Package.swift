// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "once",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "once", targets: ["once"]),
        .library(name: "OnceKafka", targets: ["OnceKafka"]),
        .library(name: "OncePostgres", targets: ["OncePostgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // C shims: module maps only. Nothing outside OnceKafka / OncePostgres imports these.
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),

        // Dedicated OS threads for blocking C calls, kept off the cooperative pool.
        .target(name: "OnceThreads"),

        .target(
            name: "OnceKafka",
            dependencies: [
                "CRdKafka",
                "OnceThreads",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "OncePostgres",
            dependencies: [
                "CLibPQ",
                "OnceThreads",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The pipeline: envelopes, the batch transaction, dead letters, offsets, outbox relay.
        .target(
            name: "OnceCore",
            dependencies: [
                "OnceKafka",
                "OncePostgres",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The handlers: credits (completions, grants), batch actions, jobs.
        .target(
            name: "OnceDomain",
            dependencies: [
                "OnceCore",
                "OncePostgres",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "once",
            dependencies: [
                "OnceCore",
                "OnceDomain",
                "OnceKafka",
                "OncePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // deploy/local/bench's driver: workload, strategies, ceiling, replay, latency, report.
        .executableTarget(
            name: "OnceBench",
            dependencies: [
                "OnceCore",
                "OnceDomain",
                "OnceKafka",
                "OncePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),

        // What the integration tests share: the local services, throwaway databases and topics,
        // awaiting conditions, and `once` run as a child process.
        .target(
            name: "OnceTestSupport",
            dependencies: ["OnceCore", "OnceKafka", "OncePostgres"],
            path: "Tests/OnceTestSupport"
        ),
        .testTarget(name: "OnceThreadsTests", dependencies: ["OnceThreads"]),
        .testTarget(name: "OnceKafkaTests", dependencies: ["OnceKafka", "OnceThreads"]),
        .testTarget(name: "OncePostgresTests", dependencies: ["OncePostgres"]),
        .testTarget(name: "OnceCoreTests", dependencies: ["OnceCore", "OnceKafka", "OncePostgres", "OnceTestSupport"]),
        .testTarget(name: "OnceDomainTests", dependencies: ["OnceDomain", "OnceCore", "OnceKafka", "OncePostgres", "OnceTestSupport"]),
        .testTarget(name: "onceTests", dependencies: ["once", "OnceDomain", "OnceCore", "OnceKafka", "OncePostgres", "OnceTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
