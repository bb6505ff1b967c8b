import OnceEnvelope
import OnceKafka
import OnceOutbox
import OncePostgres
import OnceTracing

/// What an event did, as recorded in `processed_messages.outcome`.
public enum EventOutcome: String, Sendable, CaseIterable, Hashable {
    /// Its side effects were written now.
    case applied
    /// Another event already had this business key's effect, identically: nothing written.
    case duplicate
    /// Another event already had this business key's effect, differently: nothing written,
    /// kept for the audit.
    case conflict
    /// It was rejected for good and is in `dead_letters`.
    case deadLettered = "dead_lettered"
}

/// A valid, not yet processed event handed to its handler, with where it came from.
public struct HandlerInput<Command: Sendable>: Sendable {
    public var envelope: Envelope
    public var command: Command
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    /// The headers that carry this event's trace onto the records it causes (a `traceparent`
    /// with a new span id, and its `tracestate`): put them on its outbox messages. Empty when
    /// the record carried no trace context.
    public var traceHeaders: [String: String]
}

/// Thrown by a handler that rejects an event for good (a business rule, a bad reference).
/// The pipeline isolates the event by bisecting its batch and dead-letters it as
/// `handler_failed`; the other events of the batch commit.
public struct PermanentHandlerError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Applies the side effects of one event type.
///
/// `decode` runs before any transaction, on the cooperative pool: it validates `data` and
/// builds the command (throw `EnvelopeError` with reason `invalidData` naming the field).
/// `apply` runs inside the batch transaction on a database thread, with the new events of the
/// batch's partitions, each partition's in offset order (`HandlerInput` says which partition);
/// it writes effects guarded by business-key unique constraints and returns one outcome per
/// input (`applied`, `duplicate` or `conflict`). It throws `PermanentHandlerError` to reject an
/// event for good; a `PostgresError` propagates (transient ones retry the batch). Adding an event
/// type is one handler type plus one registration line.
public protocol EventHandler: Sendable {
    associatedtype Command: Sendable
    /// The envelope `type` this handler takes, e.g. `batch.completed`.
    static var eventType: String { get }
    /// The envelope versions it understands.
    static var versions: Set<Int> { get }
    func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command
    func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome]
}

extension EventHandler {
    public static var versions: Set<Int> { [1] }
}

/// What a handler may use inside the batch transaction: the connection (already in the
/// transaction; do not commit or roll back), the outbox, and the transaction's last step.
/// Valid only during `apply`.
public struct HandlerContext {
    public let connection: PostgresConnection
    public let consumerGroup: String
    let outbox: OutboxWriter
    let finale: TransactionFinale
    /// `.new` in `once run`; `.mayRepeat` in a replay or a re-drive, which may re-apply an
    /// effect lost since (a ledger row deleted by hand) whose event the outbox still holds.
    let outboxKeys: OutboxKeys

    /// Queues the outbound events of effects just made; they are written in the same
    /// transaction and published after it commits. In `once run` each (tenant, event type,
    /// aggregate) must be new, as the effect's own business key makes it: one the outbox holds
    /// already fails the statement (`OutboxKeys.new`), and the record is dead-lettered for it. In
    /// a replay or a re-drive, the outbox keeps the row it has.
    public func publish(_ messages: [OutboxMessage]) throws {
        try outbox.insert(messages, keys: outboxKeys, on: connection)
    }

    /// Runs `work` as the last statements of the transaction, after every handler of the batch
    /// and right before the commit: the place for writes that lock rows other partitions'
    /// transactions wait for (an account's balance), which stay locked until the commit. Errors
    /// from `work` are the handler's. While a batch is being bisected to isolate a failing
    /// record, `work` runs at once instead, inside that record's savepoint.
    public func atCommit(_ work: @escaping (HandlerContext) throws -> Void) throws {
        if finale.runsAtOnce { try work(self) } else { finale.work.append(work) }
    }
}

/// The work handlers left for the end of one batch transaction (`HandlerContext.atCommit`).
final class TransactionFinale {
    let runsAtOnce: Bool
    var work: [(HandlerContext) throws -> Void] = []

    init(runsAtOnce: Bool) { self.runsAtOnce = runsAtOnce }
}

/// The handlers of a `once` process, by event type. Built once at start-up; immutable after.
public struct HandlerRegistry: Sendable {
    struct Entry: Sendable {
        var versions: Set<Int>
        var decode: @Sendable (Envelope) throws(EnvelopeError) -> any Sendable
        var apply: @Sendable ([DecodedEvent], HandlerContext) throws -> [EventOutcome]
    }

    private(set) var entries: [String: Entry] = [:]

    public init() {}

    /// Registers `handler` for its event type; a second handler for the same type replaces the first.
    public mutating func register<Handler: EventHandler>(_ handler: Handler) {
        entries[Handler.eventType] = Entry(
            versions: Handler.versions,
            decode: { envelope throws(EnvelopeError) in try handler.decode(envelope) },
            apply: { events, context in
                let inputs = events.map { event in
                    HandlerInput(
                        envelope: event.envelope, command: event.command as! Handler.Command,
                        topic: event.record.topic, partition: event.record.partition, offset: event.record.offset,
                        traceHeaders: event.trace?.headers ?? [:])
                }
                let outcomes = try handler.apply(inputs, in: context)
                precondition(outcomes.count == inputs.count, "\(Handler.eventType) returned \(outcomes.count) outcomes for \(inputs.count) events")
                return outcomes
            }
        )
    }

    /// Types and versions that envelopes may carry.
    public var supportedVersions: [String: Set<Int>] { entries.mapValues(\.versions) }
}

/// A record that passed envelope and data validation, ready for its handler. A class, so that
/// the batch transaction's many passes over its records (ids, offsets, runs) share one copy
/// instead of retaining every string and byte array of each record on every pass; immutable,
/// hence `Sendable`.
package final class DecodedEvent: Sendable {
    package let envelope: Envelope
    package let command: any Sendable
    /// The record it came from; its bytes go to the dead letter if the handler rejects it.
    package let record: KafkaRecord
    /// The trace the record carried, continued (`RecordTracing`); nil when it carried none.
    package let trace: RecordTrace?
    package var offset: Int64 { record.offset }

    package init(envelope: Envelope, command: any Sendable, record: KafkaRecord, trace: RecordTrace? = nil) {
        self.envelope = envelope
        self.command = command
        self.record = record
        self.trace = trace
    }
}
