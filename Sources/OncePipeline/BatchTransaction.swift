import OnceKafka
import OnceOutbox
import OncePostgres
import OnceSchema

/// The transaction that makes a batch's effects happen exactly once.
///
/// For the batches of one or more partitions, in one transaction: move each partition's stored
/// position (only under the claiming generation and from where its batch starts: the zombie
/// fence), claim each event id in `processed_messages` (ids already there are redeliveries and
/// are skipped), run the handlers on the new events in offset order, record outcomes other than
/// `applied`, write dead letters with their outbox rows, run what handlers left for the end
/// (writes to rows that other partitions' transactions wait for, so they stay locked only until
/// the commit right after), and NOTIFY the relay. A handler that fails for good on some record
/// makes the batch run again with that handler's runs bisected under savepoints, so only the
/// failing record is dead-lettered. Blocking: runs on a database thread. Transient
/// `PostgresError`s propagate for the caller to retry; `BatchFenced` means a partition moved on.
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
        do {
            do {
                return try attempt(parts, mode: mode, isolating: false, on: db)
            } catch is HandlerFailure {
                return try attempt(parts, mode: mode, isolating: true, on: db)
            }
        } catch let rollback as DryRunRollback {
            return rollback.summary
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

            // 2. Dedup: the first record of each (tenant, id) in the batch, claimed in
            //    processed_messages (`Claim`); each claimed row's bucket and ctid come back, so
            //    that step 4 finds it without a lookup.
            var seen = Set<ClaimKey>()
            let candidates = records.filter { seen.insert($0.claimKey).inserted }
            let claim = mode.expectsRepeats ? Claim.probingFirst : Claim.inserting
            let claimed = Dictionary(uniqueKeysWithValues: try tx.query(
                prepared: claim.name, claim.sql,
                [.text(consumerGroup), .textArray(candidates.map(\.topic)), .int64Array(candidates.map { Int64($0.partition) }),
                 .textArray(candidates.map(\.eventID)), .int64Array(candidates.map(\.offset)),
                 .textArray(candidates.map(\.eventType)), .textArray(candidates.map(\.claimTenant)),
                 .textArray(candidates.map(\.provisionalOutcome.rawValue)),
                 .int64Array(candidates.map(\.claimTimeMicroseconds))]
            ).map {
                (ClaimKey(tenantID: try $0.decode(String.self, column: 0), eventID: try $0.decode(String.self, column: 1)),
                 ClaimedRow(bucket: try $0.decode(String.self, column: 2), ctid: try $0.decode(String.self, column: 3)))
            })
            let new = candidates.filter { claimed[$0.claimKey] != nil }

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

            // 4. Outcomes other than the provisional `applied`, one statement per outcome and
            //    partition, by the rows' ctids (stable: no other transaction sees these rows
            //    before the commit; the bucket prunes the statement to that one partition).
            let changed = Dictionary(grouping: outcomes.filter { $0.1 != .applied }) {
                OutcomeUpdate(outcome: $0.1, bucket: claimed[$0.0.claimKey]!.bucket)
            }
            for (update, rows) in changed.sorted(by: { ($0.key.outcome.rawValue, $0.key.bucket) < ($1.key.outcome.rawValue, $1.key.bucket) }) {
                try tx.query(
                    prepared: "once_outcome",
                    "UPDATE processed_messages SET outcome = $1 WHERE bucket = $2::timestamptz AND ctid = ANY($3::text[]::tid[])",
                    [.text(update.outcome.rawValue), .text(update.bucket), .textArray(rows.map { claimed[$0.0.claimKey]!.ctid })])
            }

            // 5. Dead letters, each with its record on the dead-letter topic (a retried one
            //    settles its own row instead: resolved, or failed again).
            if case .deadLetterRetry(let retrying) = mode {
                try retrying.settle(failedAgain: deadLetters.first, on: tx)
            } else {
                try DeadLetter.write(deadLetters, consumerGroup: consumerGroup, topic: deadLetterTopic, context: context)
            }

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

/// The statement that claims a batch's event ids in `processed_messages`.
///
/// Each id goes to the time partition of its own `occurred_at` (clamped to the partitions that
/// exist; `TimePartitions`): every copy of a record lands in the same partition, whose unique
/// index decides, and the conflict clause settles races with other transactions. Ids from
/// before the upgrade to per-tenant dedup are looked up in the legacy partition (keyed by id
/// alone) while it is inside the window; pruned away, that probe costs nothing.
///
/// `once run` inserts straight away: its records are mostly new, and the conflict clause finds
/// a redelivery's recent row by the same index descent a probe would make (the probe cost about
/// 2.5 µs per new id, docs/benchmarks.md). A replay or a re-drive, whose records are mostly
/// claimed long since, first probes the index alone (index-only: a refused insert reads the
/// heap of each conflicting row, 39 ms against 16 ms per 2,000 replayed records). OFFSET 0 keeps
/// each probe per id: as a join, the planner may hash the group's whole history instead.
private struct Claim: Sendable {
    /// `once run`'s.
    static let inserting = Claim(name: "once_claim", probesFirst: false)
    /// A replay's and a re-drive's.
    static let probingFirst = Claim(name: "once_claim_probed", probesFirst: true)

    let name: String
    let sql: String

    private init(name: String, probesFirst: Bool) {
        let legacy = """
            NOT EXISTS (
                SELECT 1 FROM processed_messages l
                WHERE l.bucket = '-infinity' AND l.consumer_group = $1 AND l.event_id = e.id
                  AND (l.tenant_id = e.tenant OR l.tenant_id IS NULL)
                OFFSET 0)
            """
        let own = """
            NOT EXISTS (
                SELECT 1 FROM processed_messages d
                WHERE d.bucket = e.bucket AND d.consumer_group = $1 AND d.tenant_id = e.tenant AND d.event_id = e.id
                OFFSET 0)
            """
        self.name = name
        self.sql = """
            INSERT INTO processed_messages
                (consumer_group, tenant_id, event_id, bucket, topic, partition, kafka_offset, event_type, outcome)
            SELECT $1, e.tenant, e.id, e.bucket, e.topic, e.partition::integer, e.off, e.type, e.outcome
            FROM (
                SELECT u.*, \(TimePartitions.claimBucket(at: "'epoch'::timestamptz + u.at * interval '1 microsecond'", window: "w")) AS bucket
                FROM once_partitioning w,
                     unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::bigint[])
                         AS u(topic, partition, id, off, type, tenant, outcome, at)
            ) e
            WHERE \((probesFirst ? [own, legacy] : [legacy]).joined(separator: "\nAND "))
            ON CONFLICT DO NOTHING
            RETURNING tenant_id, event_id, bucket::text, ctid::text
            """
    }
}

/// A claimed `processed_messages` row: its partition's bucket (as text) and its place there.
private struct ClaimedRow {
    var bucket: String
    var ctid: String
}

/// One outcome update statement's scope.
private struct OutcomeUpdate: Hashable {
    var outcome: EventOutcome
    var bucket: String
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
