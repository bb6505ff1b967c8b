// swift-tools-version:6.1
import PackageDescription

/// What the pipeline and the operator actions both build on.
let pipelineParts: [Target.Dependency] = [
    "OnceBackoff", "OnceEnvelope", "OnceJSON", "OnceKafka", "OnceOutbox", "OncePostgres", "OnceSchema", "OnceTracing",
    .product(name: "Logging", package: "swift-log"),
    .product(name: "Metrics", package: "swift-metrics"),
]

/// What the command line and the bench's driver use: every module, the argument parser, logging.
let everyModule: [Target.Dependency] = pipelineParts + [
    "OnceDomain", "OnceOperations", "OncePipeline",
    .product(name: "ArgumentParser", package: "swift-argument-parser"),
]

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
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // OTLP over HTTP only: the gRPC exporter's dependencies are not built.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
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
                "OnceJSON",
                "OnceThreads",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
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
        // Retry delays and the one cancellation-aware wait before a retry.
        .target(name: "OnceBackoff"),
        // The JSON parser and writer (strict, and faster than Foundation's: docs/benchmarks.md).
        .target(name: "OnceJSON"),
        // The event envelope: validation of a record's bytes, RFC 3339 timestamps, event data.
        .target(name: "OnceEnvelope", dependencies: ["OnceJSON"]),
        // The schema: migrations, time partitions, retention and partition maintenance.
        .target(
            name: "OnceSchema",
            dependencies: [
                "OncePostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // W3C trace context carried from input records to the records they cause, and spans.
        .target(
            name: "OnceTracing",
            dependencies: ["OnceKafka", .product(name: "Tracing", package: "swift-distributed-tracing")]
        ),
        // The transactional outbox: what a transaction publishes, and the relay to the broker.
        .target(
            name: "OnceOutbox",
            dependencies: [
                "OnceBackoff",
                "OnceJSON",
                "OnceKafka",
                "OnceSchema",
                "OncePostgres",
                "OnceTracing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The pipeline: handlers, the scheduler, stored positions, the batch transaction.
        .target(
            name: "OncePipeline",
            dependencies: pipelineParts + [.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        // What operators do: replay, offset resets, dead-letter retries, status, audits.
        .target(name: "OnceOperations", dependencies: pipelineParts + ["OncePipeline"]),
        // once run's HTTP endpoint: /metrics (Prometheus), /healthz, /readyz.
        .target(
            name: "OnceServer",
            dependencies: [
                "OnceOutbox", "OncePipeline", "OncePostgres",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The operator console: server-rendered pages over the operations API, and its actions.
        .target(
            name: "OnceConsole",
            dependencies: [
                "OnceDomain", "OnceJSON", "OnceKafka", "OnceOperations", "OncePipeline", "OncePostgres", "OnceSchema",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The handlers: credits (completions, grants), batch actions, jobs.
        .target(
            name: "OnceDomain",
            dependencies: [
                "OnceEnvelope",
                "OnceJSON",
                "OncePipeline",
                "OncePostgres",
                "OnceSchema",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "once",
            dependencies: everyModule + [
                "OnceConsole", "OnceServer",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // deploy/local/bench's driver: workload, strategies, ceiling, replay, latency, report.
        .executableTarget(
            name: "OnceBench",
            dependencies: everyModule + [.product(name: "Histogram", package: "hdrhistogram-swift")]
        ),

        // What the integration tests share: the local services, throwaway databases and topics,
        // awaiting conditions, and `once` run as a child process.
        .target(
            name: "OnceTestSupport",
            dependencies: [
                "OnceEnvelope", "OnceJSON", "OnceKafka", "OnceOutbox", "OncePipeline", "OncePostgres", "OnceSchema",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/OnceTestSupport"
        ),
        .testTarget(name: "OnceThreadsTests", dependencies: ["OnceThreads"]),
        .testTarget(name: "OnceKafkaTests", dependencies: ["OnceKafka", "OnceThreads"]),
        .testTarget(name: "OncePostgresTests", dependencies: ["OncePostgres"]),
        .testTarget(name: "OnceBackoffTests", dependencies: ["OnceBackoff"]),
        .testTarget(name: "OnceJSONTests", dependencies: ["OnceJSON"]),
        .testTarget(name: "OnceEnvelopeTests", dependencies: ["OnceEnvelope", "OnceJSON", "OnceKafka"]),
        .testTarget(name: "OnceSchemaTests", dependencies: ["OnceSchema", "OncePostgres", "OnceTestSupport"]),
        .testTarget(name: "OnceOutboxTests", dependencies: ["OnceOutbox", "OncePipeline", "OnceKafka", "OncePostgres", "OnceTestSupport"]),
        .testTarget(
            name: "OncePipelineTests",
            dependencies: [
                "OncePipeline", "OnceEnvelope", "OnceKafka", "OnceOutbox", "OncePostgres", "OnceSchema", "OnceTestSupport", "OnceThreads",
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]),
        .testTarget(name: "OnceDomainTests", dependencies: [.product(name: "Crypto", package: "swift-crypto"), "OnceDomain", "OncePipeline", "OnceEnvelope", "OnceJSON", "OnceSchema", "OnceOperations", "OnceOutbox", "OnceKafka", "OncePostgres", "OnceTestSupport"]),
        .testTarget(name: "OnceTracingTests", dependencies: ["OnceTracing", "OnceKafka"]),
        .testTarget(name: "OnceConsoleTests", dependencies: ["OnceConsole"]),
        .testTarget(name: "onceTests", dependencies: [.product(name: "Hummingbird", package: "hummingbird"), "once", "OnceConsole", "OnceServer", "OnceDomain", "OncePipeline", "OnceEnvelope", "OnceJSON", "OnceSchema", "OnceOperations", "OnceOutbox", "OnceKafka", "OncePostgres", "OnceTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
