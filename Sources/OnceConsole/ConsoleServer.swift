import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// `once console`'s own HTTP listener: the console's routes (and `/` redirecting to
/// `/console`) with nothing else, for when no member runs. A `Service`: `run` serves until
/// graceful shutdown or cancellation. Refuses a non-loopback host without an operator token
/// (`ConsoleError.refusedAddress`), before it listens; a bind failure is
/// `ConsoleError.cannotListen`. Logs `console: http://HOST:PORT/console` once listening.
public struct ConsoleServer: Service {
    let console: Console
    let host: String
    let port: Int
    let logger: Logger

    public init(console: Console, host: String, port: Int, logger: Logger) {
        self.console = console
        self.host = host
        self.port = port
        self.logger = logger
    }

    public func run() async throws {
        if let refusal = ConsoleListenPolicy.refusal(host: host, token: console.configuration.token) {
            throw ConsoleError.refusedAddress(refusal)
        }
        let router = Router()
        console.addRoutes(to: router, root: true)
        let (host, port, logger) = (self.host, self.port, self.logger)
        let display = host.contains(":") ? "[\(host)]" : host
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "once-console"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                logger.info("console: http://\(display):\(bound)/console", metadata: ["once.http": "\(display):\(bound)"])
            },
            logger: logger)
        do {
            try await application.run()
        } catch let error as IOError {
            throw ConsoleError.cannotListen(address: "\(display):\(port)", reason: error.description)
        }
    }
}
