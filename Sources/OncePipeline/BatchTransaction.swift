import OnceKafka
import OnceOutbox
import OncePostgres
import OnceSchema

/// The transaction that makes a batch's effects happen exactly once.
///
/// For the batches of one or more partitions, in one transaction: move each partition's stored
/// position (only under the claiming generation and from where its batch starts: the zombie
/// fence), skip the event ids `processed_messages` holds already (redeliveries), run the
/// handlers on the new events in offset order, write dead letters with their outbox rows, claim
/// the new ids with their outcomes, run what handlers left for the end (writes to rows that
/// other partitions' transactions wait for, so they stay locked only until the commit right
/// after), and NOTIFY the relay. A handler that fails for good on some record makes the batch
/// run again with that handler's runs bisected under savepoints, so only the failing record is
/// dead-lettered; an id claimed by another transaction meanwhile makes it run again whole
/// (`ClaimTaken`). Blocking: runs on a database thread. Transient `PostgresError`s propagate
/// for the caller to retry; `BatchFenced` means a partition moved on.
///
/// Replays and dead-letter retries run this same transaction in another `TransactionMode`.
package struct BatchTransaction: Sendable {
    package var consumerGroup: String
    package var registry: HandlerRegistry
    package var deadLetterTopic: String

    package init(consumerGroup: String, registry: HandlerRegistry, deadLetterTopic: String) {
        self.consumerGroup = consumerGroup
        self.registry = registry
        self.deadLetterTopic = deadLetterTopic
    }

    /// The batches of one or more partitions in one transaction (`once run` joins the
    /// partitions that are waiting when a session frees up): each is fenced on its own; dedup,
    /// handlers and the outbox take all their records at once, each partition's in offset
    /// order. A fenced part fails the whole transaction with its `BatchFenced`, and nothing is
    /// written.
    package func commit(_ parts: [BatchPart], mode: TransactionMode, on db: PostgresConnection) throws -> BatchSummary {
        var raced = 0
        while true {
            do {
                do {
                    return try attempt(parts, mode: mode, isolating: false, on: db)
                } catch is HandlerFailure {
                    return try attempt(parts, mode: mode, isolating: true, on: db)
                }
            } catch let rollback as DryRunRollback {
                return rollback.summary
            } catch is ClaimTaken where raced < ClaimTaken.rerunsInPlace {
                // Another transaction claimed one of the ids since the probe, and has
                // committed: this time the probe finds it.
                raced += 1
            }
        }
    }

    private func attempt(_ parts: [BatchPart], mode: TransactionMode, isolating: Bool, on db: PostgresConnection) throws -> BatchSummary {
        try db.transaction { tx in
            // 1. The fence: this owner, this generation, from where each batch starts.
            //    In partition order, so that two transactions fencing the same partitions (a
            //    zombie's and its successor's) queue instead of deadlocking.
            if case .consume(let fences) = mode {
                let positions = StoredPositions(consumerGroup: consumerGroup)
                for part in parts.sorted(by: { $0.batch.partition < $1.batch.partition }) {
                    let partition = part.batch.partition
                    try positions.advance(partition, under: fences[partition]!, to: part.batch.nextOffset, on: tx)
                }
            }
            let records = parts.count == 1 ? parts[0].records : parts.flatMap(\.records)

            // (retry) The dead letter gives up its claim, so that its record counts as new again.
            if case .deadLetterRetry(let retrying) = mode {
                try retrying.releaseClaim(of: records, consumerGroup: consumerGroup, on: tx)
            }

            // 2. Dedup: the first record of each (tenant, id) in the batch that `processed_messages`
            //    does not hold yet (`Claim.held`); the others are redeliveries, skipped.
            var seen = Set<ClaimKey>()
            let candidates = records.filter { seen.insert($0.claimKey).inserted }
            let held = try Claim.held(candidates, consumerGroup: consumerGroup, on: tx)
            let new = candidates.indices.filter { !held.contains($0) }.map { candidates[$0] }

            // 3. Handlers, on runs of one event type (or one shared command type), in offset order.
            let outbox = OutboxWriter()
            let finale = TransactionFinale(runsAtOnce: isolating)
            let context = HandlerContext(
                connection: tx, consumerGroup: consumerGroup, outbox: outbox, finale: finale,
                outboxKeys: mode.expectsRepeats ? .mayRepeat : .new)
            var outcomes: [(DecodedEvent, EventOutcome)] = []
            let rejected = new.compactMap(DeadLetter.init(invalid:))
            var deadLetters = rejected
            for run in new.eventRuns() {
                let apply = registry.entries[run[0].envelope.type]!.apply
                if isolating {
                    try applyIsolating(run, apply, context, &outcomes, &deadLetters)
                } else {
                    outcomes += zip(run, try asHandlerFailure { try apply(run, context) })
                }
            }

            // 4. Dead letters, each with its record on the dead-letter topic (a retried one
            //    settles its own row instead: resolved, or failed again).
            if case .deadLetterRetry(let retrying) = mode {
                try retrying.settle(failedAgain: deadLetters.first, on: tx)
            } else {
                try DeadLetter.write(deadLetters, consumerGroup: consumerGroup, topic: deadLetterTopic, context: context)
            }

            // 5. The claims of the new records, each with its outcome (`Claim.insert`). An id that
            //    another transaction claimed since the probe fails the statement (`ClaimTaken`),
            //    and the whole transaction runs again, finding it.
            var outcomeOf: [ObjectIdentifier: EventOutcome] = [:]
            outcomeOf.reserveCapacity(outcomes.count)
            for (event, outcome) in outcomes { outcomeOf[ObjectIdentifier(event)] = outcome }
            let claimOutcomes = new.map { record in
                if case .event(let event) = record, let outcome = outcomeOf[ObjectIdentifier(event)] { return outcome }
                return record.provisionalOutcome
            }
            try Claim.insert(new, outcomes: claimOutcomes, consumerGroup: consumerGroup, on: tx)

            // 6. What handlers left for the end (`atCommit`: the hot rows other partitions wait
            //    for, locked as briefly as can be); then wake the relay, and commit.
            for work in finale.work { try asHandlerFailure { try work(context) } }
            if outbox.inserted > 0 { try tx.notify(channel: OutboxWriter.channel) }

            var counts: [OutcomeCount: Int] = [:]
            for (event, outcome) in outcomes {
                counts[OutcomeCount(topic: event.record.topic, type: event.envelope.type, outcome: outcome), default: 0] += 1
            }
            for letter in rejected {
                counts[OutcomeCount(topic: letter.record.topic, type: OutcomeCount.invalidType, outcome: .deadLettered), default: 0] += 1
            }
            var summary = BatchSummary(
                outcomes: outcomes.map(\.1) + rejected.map { _ in .deadLettered },
                outcomeCounts: counts,
                duplicates: records.count - new.count,
                outboxRows: outbox.inserted,
                deadLetters: deadLetters.map(\.note))
            for (event, outcome) in outcomes where event.trace != nil {
                summary.tracedOutcomes[ObjectIdentifier(event)] = outcome
            }
            // A dry run ends here: the error rolls the transaction back and carries the summary out.
            if case .dryRun = mode { throw DryRunRollback(summary: summary) }
            return summary
        }
    }

    /// Applies `run` under a savepoint; if the handler fails for good, splits the run in halves
    /// and tries each, down to the single record that fails, which becomes a dead letter.
    private func applyIsolating(
        _ run: [DecodedEvent], _ apply: ([DecodedEvent], HandlerContext) throws -> [EventOutcome],
        _ context: HandlerContext, _ outcomes: inout [(DecodedEvent, EventOutcome)], _ deadLetters: inout [DeadLetter]
    ) throws {
        do {
            let applied = try context.connection.savepoint("once_isolate") { _ in try asHandlerFailure { try apply(run, context) } }
            outcomes += zip(run, applied)
        } catch let failure as HandlerFailure {
            guard run.count > 1 else {
                deadLetters.append(DeadLetter(failed: run[0], reason: failure.description))
                outcomes.append((run[0], .deadLettered))
                return
            }
            let middle = run.count / 2
            try applyIsolating(Array(run[..<middle]), apply, context, &outcomes, &deadLetters)
            try applyIsolating(Array(run[middle...]), apply, context, &outcomes, &deadLetters)
        }
    }
}

/// The two statements that claim a batch's new event ids in `processed_messages`: a probe
/// before the handlers run, and an insert, with each record's outcome, after them.
///
/// Each id goes to the time partition of its own `occurred_at` (clamped to the partitions that
/// exist; `TimePartitions`): every copy of a record lands in the same partition, whose unique
/// index the probe reads (index-only) and the insert enforces. Ids from before the upgrade to
/// per-tenant dedup are looked up in the legacy partition (keyed by id alone) while it is inside
/// the window; pruned away, that probe costs nothing. OFFSET 0 keeps each probe per id: as a
/// join, the planner may hash the group's whole history instead.
///
/// Claiming after the handlers lets each row be written once, with its outcome: no conflict
/// clause, no row read back, no update of the rows whose outcome is not `applied`
/// (docs/benchmarks.md). Another transaction may claim one of the ids between the two
/// statements (the same id on two partitions, a replay beside `once run`): the insert then
/// waits for it, and fails with `ClaimTaken` when it commits, rolling back this transaction's
/// effects, which `BatchTransaction.commit` runs again.
private enum Claim {
    /// The indices of `candidates` whose (tenant, id) is claimed already.
    static func held(_ candidates: [BatchRecord], consumerGroup: String, on tx: PostgresConnection) throws -> Set<Int> {
        guard !candidates.isEmpty else { return [] }
        let rows = try tx.query(
            prepared: "once_claim_probe",
            """
            SELECT u.n - 1
            FROM once_partitioning w,
                 unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS u(id, tenant, at, n)
            WHERE EXISTS (
                    SELECT 1 FROM processed_messages d
                    WHERE d.bucket = \(bucket) AND d.consumer_group = $1 AND d.tenant_id = u.tenant AND d.event_id = u.id
                    OFFSET 0)
               OR EXISTS (
                    SELECT 1 FROM processed_messages l
                    WHERE l.bucket = '-infinity' AND l.consumer_group = $1 AND l.event_id = u.id
                      AND (l.tenant_id = u.tenant OR l.tenant_id IS NULL)
                    OFFSET 0)
            """,
            [.text(consumerGroup), .textArray(candidates.map(\.eventID)), .textArray(candidates.map(\.claimTenant)),
             .int64Array(candidates.map(\.claimTimeMicroseconds))])
        return Set(try rows.map { Int(try $0.decode(Int64.self, column: 0)) })
    }

    /// Claims `records` (none of them held at the probe) with their outcomes.
    static func insert(
        _ records: [BatchRecord], outcomes: [EventOutcome], consumerGroup: String, on tx: PostgresConnection
    ) throws {
        guard !records.isEmpty else { return }
        do {
            try tx.query(
                prepared: "once_claim",
                """
                INSERT INTO processed_messages
                    (consumer_group, tenant_id, event_id, bucket, topic, partition, kafka_offset, event_type, outcome)
                SELECT $1, u.tenant, u.id, \(bucket), u.topic, u.partition::integer, u.off, u.type, u.outcome
                FROM once_partitioning w,
                     unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::bigint[])
                         AS u(topic, partition, id, off, type, tenant, outcome, at)
                """,
                [.text(consumerGroup), .textArray(records.map(\.topic)), .int64Array(records.map { Int64($0.partition) }),
                 .textArray(records.map(\.eventID)), .int64Array(records.map(\.offset)),
                 .textArray(records.map(\.eventType)), .textArray(records.map(\.claimTenant)),
                 .textArray(outcomes.map(\.rawValue)), .int64Array(records.map(\.claimTimeMicroseconds))])
        } catch let error as PostgresError where error.kind == .uniqueViolation {
            throw ClaimTaken(consumerGroup: consumerGroup, underlying: error)
        }
    }

    /// The time partition of `u.at` (microseconds since the epoch) in the window `w`.
    private static let bucket = TimePartitions.claimBucket(at: "'epoch'::timestamptz + u.at * interval '1 microsecond'", window: "w")
}

/// Another transaction claimed one of the batch's event ids after the batch's probe, and
/// committed: nothing of this attempt was written. Transient: the batch runs again (in place
/// first, `rerunsInPlace` times; then as any failed batch, after a backoff).
struct ClaimTaken: Error, CustomStringConvertible {
    static let rerunsInPlace = 3
    var consumerGroup: String
    /// The unique violation, whose detail names the (group, tenant, id).
    var underlying: PostgresError
    var description: String {
        "an event id of the batch was claimed by another transaction meanwhile (consumer group \(consumerGroup)): "
            + (underlying.detail ?? underlying.message)
    }
}

/// How a batch transaction treats the stored positions and its ending: the one value that
/// tells `once run`'s transaction from a replay's, a dry run's and a dead-letter retry's.
package enum TransactionMode: Sendable {
    /// `once run`: each partition's position moves under the claim it was batched with (the
    /// fence); a partition claimed by another member or reset since fails the transaction.
    case consume(fences: [TopicPartition: PartitionFence])
    /// A replay: the stored positions are neither checked nor moved.
    case replay
    /// A replay that rolls back at its end: the summary tells what would have happened.
    case dryRun
    /// A dead letter's record re-driven after a fix: the dead letter's claim is released
    /// before the dedup step, and its row is settled instead of a new one written, so that the
    /// re-drive and its bookkeeping commit together.
    case deadLetterRetry(RetriedDeadLetter)

    /// Whether most records are expected to be claimed already (a replay's, a re-drive's).
    var expectsRepeats: Bool {
        if case .consume = self { return false }
        return true
    }
}

/// One partition's share of a batch transaction: its batch, and what validation made of each
/// of its records.
package struct BatchPart: Sendable {
    package var batch: PartitionBatch
    package var records: [BatchRecord]

    package init(batch: PartitionBatch, records: [BatchRecord]) {
        self.batch = batch
        self.records = records
    }
}

/// What one committed batch transaction did.
package struct BatchSummary: Sendable {
    package var outcomes: [EventOutcome]
    /// The outcomes again, counted by topic and event type (for metrics).
    package var outcomeCounts: [OutcomeCount: Int] = [:]
    /// Records skipped because their event id was already processed (or repeated in the batch).
    package var duplicates: Int
    package var outboxRows: Int
    /// Why records of the batch were dead-lettered, in the order they were.
    package var deadLetters: [DeadLetterNote] = []
    /// The outcome of each event that carried a trace, by the event's identity.
    package var tracedOutcomes: [ObjectIdentifier: EventOutcome] = [:]
}

/// Records of one topic and event type that ended in one outcome: a metric's labels.
package struct OutcomeCount: Hashable, Sendable {
    /// The type label of records rejected before their type could be read.
    package static let invalidType = "unknown"
    package var topic: String
    package var type: String
    package var outcome: EventOutcome
}

/// Carries a dry run's summary out of the transaction it rolls back.
private struct DryRunRollback: Error {
    var summary: BatchSummary
}

/// A handler's failure that is not transient: the record is at fault, not the database.
struct HandlerFailure: Error, CustomStringConvertible {
    var underlying: any Error
    var description: String { "\(underlying)" }
}

/// Runs handler code, turning every error that retrying cannot cure into `HandlerFailure`, but
/// for the set-up's (`PostgresError.remedy`: a privilege, the schema), which are no record's
/// fault: no record is dead-lettered for them, and the pipeline stops.
private func asHandlerFailure<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as PostgresError where error.isTransient || error.remedy != nil {
        throw error
    } catch {
        throw HandlerFailure(underlying: error)
    }
}
