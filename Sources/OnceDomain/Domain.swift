import OncePipeline
import OnceSchema

/// The business side of `once`: credits (completions, grants), batch actions and jobs.
///
/// The command line wires it in with two lines:
///
///     var registry = HandlerRegistry()
///     Domain.register(into: &registry)
///     try Migrator(migrations: Migration.pipeline + Domain.migrations).migrate(on: connection)
public enum Domain {
    /// The domain's schema (versions 100 and up; the pipeline's are below 100).
    public static let migrations: [Migration] = Migration.domain

    /// What a run-time role needs on the domain's tables (besides `Privileges.pipeline`).
    public static let privileges = Privileges(tables: [
        Privileges.Table("credit_accounts", ["SELECT", "INSERT", "UPDATE"]),
        Privileges.Table("credit_ledger", ["SELECT", "INSERT"]),
        Privileges.Table("credit_conflicts", ["SELECT", "INSERT"]),
        Privileges.Table("devices", ["SELECT", "INSERT", "UPDATE"]),
        Privileges.Table("batch_action_devices", ["SELECT", "INSERT"]),
        Privileges.Table("jobs", ["SELECT", "INSERT"]),
        Privileges.Table("job_conflicts", ["SELECT", "INSERT"]),
    ])

    /// The event types the domain handles, in contract order.
    public static let eventTypes: [String] = [
        BatchCompletedHandler.eventType,
        CreditsGrantedHandler.eventType,
        BatchActionRequestedHandler.eventType,
        JobRequestedHandler.eventType,
    ]

    /// Registers every domain handler, publishing to `topics`.
    public static func register(into registry: inout HandlerRegistry, topics: DomainTopics = DomainTopics()) {
        registry.register(BatchCompletedHandler(topic: topics.creditLedger))
        registry.register(CreditsGrantedHandler(topic: topics.creditLedger))
        registry.register(BatchActionRequestedHandler(topic: topics.deviceDispatch))
        registry.register(JobRequestedHandler(topic: topics.jobsCreated))
    }
}
