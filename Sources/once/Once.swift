import ArgumentParser

@main
struct Once: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "once",
        abstract: "A Kafka consumer group whose effects in PostgreSQL happen exactly once per event.",
        version: "0.1.0",
        subcommands: [Migrate.self, Run.self, Produce.self, Devices.self, Audit.self, Status.self, Replay.self, Offsets.self, DeadLetters.self, Prune.self, Grants.self, ConsoleCommand.self]
    )
}
