import Hummingbird
import Logging
import Metrics
import NIOCore
import OnceOutbox
import OncePipeline
import OncePostgres
import Prometheus
import ServiceLifecycle
import Synchronization

/// `once run`'s HTTP endpoint, a `Service` in the same `ServiceGroup` as the pipeline:
///
/// - `GET /metrics`: every swift-metrics metric of the process, in Prometheus's text format;
/// - `GET /healthz`: 200 while the process's loops are alive (the poll loop polls, no batch's
///   database call hangs), else 503;
/// - `GET /readyz`: 200 when the database answers, the member is in the group with its
///   assignment (or says it owns no partitions) and the relay is active or standing by, else
///   503.
///
/// Each body is one line saying why. The server owns one database session of its own, probed
/// once a second, so that readiness follows the database within seconds without touching the
/// pipeline's sessions. `run` returns on graceful shutdown or cancellation.
///
/// Other concerns (the console) add routes of their own through `routes`, closures run once on
/// the router before it listens, so that this module depends on none of them.
public struct OperationsServer: Service {
    /// Adds routes to the endpoint's router; called once, before the server listens.
    public typealias RouteInstaller = @Sendable (Router<BasicRequestContext>) -> Void

    /// Where it listens: `127.0.0.1:9464` unless `--http` says otherwise; port 0 takes any.
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public static let `default` = Address(host: "127.0.0.1", port: 9464)

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `HOST:PORT` (`[v6]:PORT` for an IPv6 host), or nil when `text` is not one.
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65535).contains(port)
            else { return nil }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { return nil }
            self.init(host: host, port: port)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    let address: Address
    let registry: PrometheusCollectorRegistry
    let health: PipelineHealth
    let relay: RelayStatus
    let databaseURL: String
    let logger: Logger
    let routes: [RouteInstaller]

    public init(
        address: Address, registry: PrometheusCollectorRegistry, health: PipelineHealth, relay: RelayStatus,
        databaseURL: String, logger: Logger, routes: [RouteInstaller] = []
    ) {
        self.address = address
        self.registry = registry
        self.health = health
        self.relay = relay
        self.databaseURL = databaseURL
        self.logger = logger
        self.routes = routes
    }

    /// Makes swift-metrics report to a new Prometheus registry and returns it; call once per
    /// process, before any metric is created.
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets["once_batch_records"] = [1, 10, 50, 100, 250, 500, 1000, 2000, 5000]
        factory.durationHistogramBuckets["once_batch_duration_seconds"] = [
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        factory.durationHistogramBuckets["once_outbox_publish_seconds"] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        MetricsSystem.bootstrap(CatalogMetricsFactory(inner: factory))
        return registry
    }

    public func run() async throws {
        let probe = DatabaseProbe(databaseURL: databaseURL, logger: logger)
        let router = Router()
        let registry = self.registry
        let health = self.health
        let relay = self.relay
        router.get("metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: registry.emitToString())))
        }
        router.get("healthz") { _, _ -> Response in
            let (alive, line) = health.liveness()
            return Self.line(alive ? .ok : .serviceUnavailable, (alive ? "alive: " : "not alive: ") + line)
        }
        router.get("readyz") { _, _ -> Response in
            let (ready, line) = Self.readiness(database: probe.state(), health: health, relay: relay)
            return Self.line(ready ? .ok : .serviceUnavailable, line)
        }
        for install in routes { install(router) }
        let logger = self.logger
        let address = self.address
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "once"),
            onServerRunning: { channel in
                let bound = channel.localAddress.flatMap(\.port).map { Address(host: address.host, port: $0) } ?? address
                logger.info("http: /metrics, /healthz and /readyz on \(bound)", metadata: ["once.http": "\(bound)"])
            },
            logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await probe.run() }
            group.addTask {
                do {
                    try await application.run()
                } catch let error as IOError {
                    throw OperationsServerError.cannotListen(address: address, reason: error.description)
                }
            }
            // The application returns on graceful shutdown; the probe then stops with it.
            try await group.next()
            group.cancelAll()
        }
    }

    /// The readiness answer and its one line.
    static func readiness(
        database: DatabaseProbe.Answer, health: PipelineHealth, relay: RelayStatus
    ) -> (ready: Bool, line: String) {
        var reasons: [String] = []
        var facts: [String] = []
        switch database {
        case .answering: facts.append("the database answers")
        case .failing(let error, let since): reasons.append("the database does not answer (for \(whole(since))): \(error)")
        case .unknown: reasons.append("the database has not been asked yet")
        }
        let (member, line) = health.membership()
        if member { facts.append(line) } else { reasons.append(line) }
        switch relay.role {
        case .active, .standby:
            facts.append("relay \(relay.role.rawValue)" + (relay.failure.map { " (retrying: \($0))" } ?? ""))
        case .starting:
            reasons.append("the relay is starting")
        }
        return reasons.isEmpty
            ? (true, "ready: " + facts.joined(separator: "; "))
            : (false, "not ready: " + reasons.joined(separator: "; "))
    }

    private static func line(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text + "\n")))
    }
}

/// Why `once run`'s HTTP endpoint could not start.
public enum OperationsServerError: Error, CustomStringConvertible {
    case cannotListen(address: OperationsServer.Address, reason: String)

    public var description: String {
        switch self {
        case .cannotListen(let address, let reason):
            return "cannot serve /metrics, /healthz and /readyz on \(address) (\(reason)): pass --http ADDRESS:PORT, or --http off"
        }
    }
}

/// A duration to the whole second, as operators read it.
func whole(_ duration: Duration) -> String { "\(duration.components.seconds) s" }

/// Asks the database `SELECT 1` once a second on a session of its own and keeps the answer.
/// Thread-safe; `run` loops until its task is cancelled and closes the session.
final class DatabaseProbe: Sendable {
    enum Answer: Sendable {
        case unknown
        case answering
        case failing(String, since: Duration)
    }

    private let databaseURL: String
    private let logger: Logger
    private let answer = Mutex<(ok: Bool?, error: String, since: ContinuousClock.Instant)>((nil, "", .now))
    /// A probe call in flight for longer than this counts as no answer.
    static let patience: Duration = .seconds(3)

    init(databaseURL: String, logger: Logger) {
        self.databaseURL = databaseURL
        self.logger = logger
    }

    func state(now: ContinuousClock.Instant = .now) -> Answer {
        answer.withLock { answer in
            switch answer.ok {
            case nil: return .unknown
            case true?: return now - answer.since > Self.patience ? .failing("no answer", since: now - answer.since) : .answering
            case false?: return .failing(answer.error, since: now - answer.since)
            }
        }
    }

    func run() async {
        var session: PostgresSession?
        while !Task.isCancelled {
            let asked = ContinuousClock.now
            do {
                if session == nil {
                    session = try await PostgresSession.connect(
                        configuration: PostgresConfiguration(
                            url: databaseURL, connectTimeout: .seconds(2), applicationName: "once-http"),
                        logger: logger, threadName: "once-http-db")
                }
                _ = try await session!.withConnection { db in try db.query("SELECT 1") }
                answer.withLock { $0 = (true, "", .now) }
            } catch {
                answer.withLock { previous in
                    let since = previous.ok == false ? previous.since : asked
                    previous = (false, "\(error)", since)
                }
                if let open = session {
                    await open.close()
                    session = nil
                }
            }
            do { try await Task.sleep(for: .seconds(1)) } catch { break }
        }
        await session?.close()
    }
}

extension OperationsServer: CustomStringConvertible {
    /// What the service group's logs name it by: its address, never its database URL.
    public var description: String { "OperationsServer(\(address))" }
}
