import OnceEnvelope
import OnceJSON
import OnceOutbox
import OncePipeline
import OncePostgres

/// `job.requested` v1: one job per (tenant, `request_id`), however many emissions arrive.
///
/// The first emission of a request inserts the `jobs` row and queues `job.created`. The job id
/// is the name-based UUID of `"job/<tenant_id>/<request_id>"`, so a rebuilt database (a replay
/// from the start) gives every job the id it had before. A later emission (a frontend and a
/// backend both emitting, a retry with a new event id) writes nothing: it is `duplicate` when
/// it asks for the same job, `conflict` when its `user_id`, `action_code`, `action_name` or
/// `customer_ids` differ (the last compared as a multiset: the same ids in another order are
/// the same request). Conflicts are listed in `job_conflicts`.
public struct JobRequestedHandler: EventHandler {
    public struct Command: Sendable, Hashable {
        public var requestID: String
        public var userID: String
        public var actionCode: Int64
        public var actionName: String
        public var customerIDs: [String]

        public init(requestID: String, userID: String, actionCode: Int64, actionName: String, customerIDs: [String]) {
            self.requestID = requestID
            self.userID = userID
            self.actionCode = actionCode
            self.actionName = actionName
            self.customerIDs = customerIDs
        }

        /// Whether `other` asks for the same job.
        func isSameRequest(as other: Command) -> Bool {
            userID == other.userID && actionCode == other.actionCode && actionName == other.actionName
                && customerIDs.sorted() == other.customerIDs.sorted()
        }
    }

    public static let eventType = "job.requested"
    /// The outbound event type.
    public static let createdType = "job.created"
    /// The most customers one job may name.
    public static let maxCustomers = 1000

    /// Where `job.created` goes.
    public var topic: String

    public init(topic: String = DomainTopics().jobsCreated) {
        self.topic = topic
    }

    /// The job id of a request: the same for every emission and every replay.
    public static func jobID(tenantID: String, requestID: String) -> String {
        NameBasedUUID(namespace: .onceNamespace, name: "job/\(tenantID)/\(requestID)").description
    }

    public func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let data = EventData(envelope)
        return Command(
            requestID: try data.string("request_id", length: 1...128),
            userID: try data.string("user_id", length: 1...128),
            actionCode: try data.integer("action_code", in: Int64.min...Int64.max),
            actionName: try data.string("action_name", length: 1...128),
            customerIDs: try data.stringArray("customer_ids", count: 1...Self.maxCustomers, elementLength: 1...128))
    }

    private struct Key: Hashable {
        var tenantID: String
        var requestID: String
    }

    /// The job already recorded for a request.
    private struct Standing {
        var command: Command
        var eventID: String
    }

    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        let db = context.connection
        // The first emission of each request is the one that may create its job.
        let byKey = FirstPerBusinessKey(inputs) { Key(tenantID: $0.envelope.tenantID, requestID: $0.command.requestID) }
        let candidates = byKey.firsts

        // 1. The jobs of requests not seen before, in one statement. customer_ids is an array
        //    per job, so the rows travel as one JSON array rather than parallel arrays.
        var rows: [JSONValue] = []
        for index in candidates {
            let input = inputs[index]
            rows.append(
                .object([
                    "job_id": .string(
                        Self.jobID(tenantID: input.envelope.tenantID, requestID: input.command.requestID)),
                    "tenant_id": .string(input.envelope.tenantID),
                    "request_id": .string(input.command.requestID),
                    "user_id": .string(input.command.userID),
                    "action_code": .integer(input.command.actionCode),
                    "action_name": .string(input.command.actionName),
                    "customer_ids": .array(input.command.customerIDs.map(JSONValue.string)),
                    "event_id": .string(input.envelope.eventID),
                    "occurred_us": .integer(try occurredMicroseconds(input.envelope)),
                ]))
        }
        let inserted = try db.query(
            """
            INSERT INTO jobs
                (job_id, tenant_id, request_id, user_id, action_code, action_name, customer_ids, event_id, occurred_at)
            SELECT j.job_id, j.tenant_id, j.request_id, j.user_id, j.action_code, j.action_name,
                   ARRAY(SELECT c.id FROM jsonb_array_elements_text(j.customer_ids) WITH ORDINALITY AS c(id, n)
                         ORDER BY c.n),
                   j.event_id, timestamptz 'epoch' + j.occurred_us * interval '1 microsecond'
            FROM jsonb_to_recordset($1::jsonb) AS j(
                job_id uuid, tenant_id text, request_id text, user_id text, action_code bigint, action_name text,
                customer_ids jsonb, event_id text, occurred_us bigint)
            ORDER BY j.tenant_id, j.request_id
            ON CONFLICT (tenant_id, request_id) DO NOTHING
            RETURNING tenant_id, request_id
            """,
            [.jsonb(JSONWriter.serializeString(.array(rows)))])
        var created = Set<Key>()
        for row in inserted {
            created.insert(
                Key(tenantID: try row.decode(String.self, column: 0), requestID: try row.decode(String.self, column: 1))
            )
        }

        // 2. The jobs of requests seen before this call.
        var existing: [Key: Standing] = [:]
        let seen = byKey.seenBefore(inserted: created)
        if !seen.isEmpty {
            let held = try db.query(
                """
                SELECT j.tenant_id, j.request_id, j.user_id, j.action_code, j.action_name, j.customer_ids, j.event_id
                FROM jobs j
                JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, request_id) USING (tenant_id, request_id)
                """,
                [.textArray(seen.map(\.tenantID)), .textArray(seen.map(\.requestID))])
            for row in held {
                let command = Command(
                    requestID: try row.decode(String.self, column: 1), userID: try row.decode(String.self, column: 2),
                    actionCode: try row.decode(Int64.self, column: 3),
                    actionName: try row.decode(String.self, column: 4),
                    customerIDs: try row.decode([String].self, column: 5))
                let key = Key(tenantID: try row.decode(String.self, column: 0), requestID: command.requestID)
                existing[key] = Standing(command: command, eventID: try row.decode(String.self, column: 6))
            }
        }

        // Every emission that created no job is compared with the job its request has.
        let settled = try byKey.settle(
            inserted: created,
            written: { Standing(command: inputs[$0].command, eventID: inputs[$0].envelope.eventID) },
            existing: existing,
            same: { index, held in held.command.isSameRequest(as: inputs[index].command) },
            missing: { index in
                PermanentHandlerError(
                    "jobs has no row for request \(inputs[index].command.requestID) after a conflicting insert")
            })
        let conflicts = settled.conflicts.map { (input: inputs[$0.index], standing: $0.held) }

        // 3. Conflicting emissions, kept for the audit (once per emission).
        if !conflicts.isEmpty {
            let rows: [JSONValue] = conflicts.map { conflict in
                .object([
                    "tenant_id": .string(conflict.input.envelope.tenantID),
                    "request_id": .string(conflict.input.command.requestID),
                    "event_id": .string(conflict.input.envelope.eventID),
                    "user_id": .string(conflict.input.command.userID),
                    "action_code": .integer(conflict.input.command.actionCode),
                    "action_name": .string(conflict.input.command.actionName),
                    "customer_ids": .array(conflict.input.command.customerIDs.map(JSONValue.string)),
                    "existing_event_id": .string(conflict.standing.eventID),
                ])
            }
            try db.execute(
                """
                INSERT INTO job_conflicts
                    (tenant_id, request_id, event_id, user_id, action_code, action_name, customer_ids,
                     existing_event_id)
                SELECT c.tenant_id, c.request_id, c.event_id, c.user_id, c.action_code, c.action_name,
                       ARRAY(SELECT x.id FROM jsonb_array_elements_text(c.customer_ids) WITH ORDINALITY AS x(id, n)
                             ORDER BY x.n),
                       c.existing_event_id
                FROM jsonb_to_recordset($1::jsonb) AS c(
                    tenant_id text, request_id text, event_id text, user_id text, action_code bigint, action_name text,
                    customer_ids jsonb, existing_event_id text)
                ON CONFLICT (tenant_id, request_id, event_id) DO NOTHING
                """,
                [.jsonb(JSONWriter.serializeString(.array(rows)))])
        }

        try context.publish(settled.applied.map { createdEvent(for: inputs[$0]) })
        return settled.outcomes
    }

    private func createdEvent(for input: HandlerInput<Command>) -> OutboxMessage {
        let command = input.command
        return OutboundEvent(
            type: Self.createdType, tenantID: input.envelope.tenantID, aggregateID: command.requestID, topic: topic,
            key: command.requestID, source: input.envelope, traceHeaders: input.traceHeaders,
            data: [
                "job_id": .string(Self.jobID(tenantID: input.envelope.tenantID, requestID: command.requestID)),
                "request_id": .string(command.requestID),
                "action_code": .integer(command.actionCode),
                "action_name": .string(command.actionName),
                "customer_ids": .array(command.customerIDs.map(JSONValue.string)),
            ]
        ).outboxMessage
    }
}
