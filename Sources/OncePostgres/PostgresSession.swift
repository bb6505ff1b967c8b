import Logging
import OnceThreads

/// One database session that async code can share (one connection, not a pool): it lives on a dedicated
/// thread of its own (`ThreadConfined`), and each `withConnection` call runs there, in
/// submission order, without blocking Swift's cooperative pool.
///
/// Ownership: call `close()` when done; it finishes the session and ends the thread. Dropping
/// the last reference without `close()` also ends the thread once queued work is done.
/// Errors are those of `PostgresConnection` (reconnection after a lost session included), plus
/// `ThreadConfinedError.closed` after `close()`.
public final class PostgresSession: Sendable {
    private let confined: ThreadConfined<PostgresConnection>

    private init(confined: ThreadConfined<PostgresConnection>) {
        self.confined = confined
    }

    deinit {
        confined.thread.shutdown()
    }

    /// Opens a session on a new thread named `threadName`.
    /// Throws `PostgresError` of kind `.connectFailed` when no session can be opened.
    public static func connect(
        configuration: PostgresConfiguration,
        logger: Logger = Logger(label: "once.postgres"),
        threadName: String = "once-postgres"
    ) async throws -> PostgresSession {
        let confined = try await ThreadConfined(name: threadName) {
            try PostgresConnection(configuration: configuration, logger: logger)
        }
        return PostgresSession(confined: confined)
    }

    /// Opens a session to `url` (a libpq URL or conninfo) with default settings.
    public static func connect(url: String, logger: Logger = Logger(label: "once.postgres")) async throws
        -> PostgresSession
    {
        try await connect(configuration: PostgresConfiguration(url: url), logger: logger)
    }

    /// Runs `body` with the connection on the connection's own thread and returns its value.
    /// `body` must not let the connection escape. Cancellation does not interrupt a running body.
    public func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        try await confined.withResource(body)
    }

    /// Finishes the session on its thread and ends the thread. Idempotent.
    public func close() async {
        await confined.close { connection in connection.close() }
    }
}
