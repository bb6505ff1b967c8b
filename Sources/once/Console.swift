import ArgumentParser
import Foundation
import Logging
import OnceConsole
import OnceServer
import ServiceLifecycle

/// `once console`: the operator console against the database alone, for when no member runs.
struct ConsoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Serve the operator console (the pages `once run` serves under /console) against the database.",
        discussion: """
            Pages: overview (partitions, lag, owners), throughput over the last hour, outcomes, \
            dead letters (filter, show, retry, discard), the offset reset planner, replays and \
            the credit audit, at http://ADDRESS/console. The broker is optional: without \
            --brokers (or ONCE_KAFKA_BROKERS) lag is unknown and the planner says so.

            Read-only unless ONCE_CONSOLE_TOKEN is set: then an operator logs in with the token \
            (or a script sends Authorization: Bearer TOKEN) to retry, discard and reset offsets. \
            It listens on loopback unless --http says otherwise, and refuses any other address \
            without a token.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Listen on ADDRESS:PORT (default 127.0.0.1:9465; port 0 takes a free one).")
    var http: String = "127.0.0.1:9465"

    func validate() throws {
        guard OperationsServer.Address(http) != nil else {
            throw ValidationError("--http: `\(http)` is not ADDRESS:PORT (e.g. 127.0.0.1:9465, [::1]:9465)")
        }
    }

    func run() async throws {
        guard let address = OperationsServer.Address(http) else { throw ExitCode.validationFailure }
        let token = ProcessInfo.processInfo.environment[ConsoleConfiguration.tokenVariable]
        if let refusal = ConsoleListenPolicy.refusal(host: address.host, token: token) {
            throw CommandFailure(refusal)
        }
        let settings = try connection.settings()
        let logger = try connection.makeLogger()
        let configuration = ConsoleConfiguration(
            consumerGroup: settings.consumerGroup, topics: settings.topics, brokers: settings.brokers,
            kafkaProperties: settings.kafkaProperties, token: token)
        let console: Console
        do {
            console = try await Console.connect(
                configuration: configuration, databaseURL: try settings.requireDatabaseURL(),
                logger: Logger(label: "once.console"))
        } catch let error as ConsoleError {
            throw CommandFailure(oneLine(error.description))
        }
        let server = ConsoleServer(console: console, host: address.host, port: address.port, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch let error as ConsoleError {
            await console.close()
            throw CommandFailure(oneLine(error.description))
        }
        await console.close()
    }
}
