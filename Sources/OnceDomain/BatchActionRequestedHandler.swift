import OnceEnvelope
import OnceJSON
import OnceOutbox
import OncePipeline
import OncePostgres

/// `batch_action.requested` v1: classify each device of a batch action exactly once.
///
/// Each event (a chunk of up to 10,000 devices) is classified by ONE statement, whatever its
/// size: the uids travel as one array, are joined to `devices` for the event's tenant, run
/// through the contract's rules in order in one `CASE`, and inserted into
/// `batch_action_devices` with `ON CONFLICT DO NOTHING RETURNING`. A handler call sends the
/// statements of all its events in one pipeline (one round trip), in offset order, so a later
/// chunk sees the rows of an earlier one. A device already recorded for the batch action (an
/// earlier chunk, a repeat, a replay with a new event id) keeps its first row; a uid repeated
/// inside one event counts once.
///
/// Each SUCCESS row inserted now queues one `batch_action.device_dispatched`. The event's
/// outcome is `applied` when it inserted at least one row, `duplicate` otherwise. Device state
/// is read, never changed.
public struct BatchActionRequestedHandler: EventHandler {
    public struct Command: Sendable, Hashable {
        public var batchActionID: String
        public var action: DeviceAction
        public var serviceTypeID: Int64?
        public var workflowID: String?
        /// The devices in event order, each uid once (its first occurrence).
        public var deviceUIDs: [String]

        public init(
            batchActionID: String, action: DeviceAction, serviceTypeID: Int64?, workflowID: String?,
            deviceUIDs: [String]
        ) {
            self.batchActionID = batchActionID
            self.action = action
            self.serviceTypeID = serviceTypeID
            self.workflowID = workflowID
            self.deviceUIDs = deviceUIDs
        }
    }

    public static let eventType = "batch_action.requested"
    /// The outbound event type, one per device that succeeded.
    public static let dispatchedType = "batch_action.device_dispatched"
    /// The most devices one event may carry.
    public static let maxDevices = 10_000
    /// The longest `device_uid` accepted at all. A longer one could never be valid (rule 1
    /// allows 64), but a uid is recorded as it came and must fit a btree key, so the event is
    /// rejected instead.
    public static let maxDeviceUIDLength = 256
    /// Rule 1 in PostgreSQL's regular-expression syntax (the same as `DeviceUID.isValid`).
    static let validUIDPattern = "^([0-9]{15}|[A-Za-z0-9-]{4,64})$"

    /// Where `batch_action.device_dispatched` goes.
    public var topic: String

    public init(topic: String = DomainTopics().deviceDispatch) {
        self.topic = topic
    }

    public func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let data = EventData(envelope)
        let batchActionID = try data.string("batch_action_id", length: 1...128)
        let actionName = try data.oneOf("action", Set(DeviceAction.allCases.map(\.rawValue)))
        let action = DeviceAction(rawValue: actionName)!
        let serviceTypeID = try data.optionalInteger("service_type_id", in: Int64.min...Int64.max)
        let workflowID = try data.optionalString("workflow_id", length: 1...128)
        if action.requiresWorkflow, workflowID == nil {
            throw data.error(
                "\(data.name("workflow_id")) is required for \(action.rawValue): a string of 1 to 128 characters")
        }
        let devices = try data.objectArray("devices", count: 1...Self.maxDevices)
        var seen = Set<String>()
        var uids: [String] = []
        uids.reserveCapacity(devices.count)
        for device in devices {
            let uid = try device.string("device_uid", length: 0...Self.maxDeviceUIDLength)
            if seen.insert(uid).inserted { uids.append(uid) }
        }
        return Command(
            batchActionID: batchActionID, action: action, serviceTypeID: serviceTypeID, workflowID: workflowID,
            deviceUIDs: uids)
    }

    /// The one statement that classifies and records every device of an event. It returns the
    /// rows it inserted: (`device_uid`, `outcome`).
    static let classifySQL = """
        WITH requested AS (
            SELECT device_uid FROM unnest($4::text[]) AS r(device_uid)
        ),
        classified AS (
            SELECT r.device_uid,
                CASE
                    WHEN r.device_uid !~ '\(validUIDPattern)' THEN 'INVALID_DEVICE_UID'
                    WHEN d.device_uid IS NULL OR d.deleted_at IS NOT NULL THEN 'DEVICE_NOT_FOUND'
                    WHEN $5::bigint IS NOT NULL AND d.service_type_id IS DISTINCT FROM $5::bigint
                        THEN 'WRONG_SERVICE_TYPE'
                    WHEN $6::text[] IS NOT NULL AND d.state <> ALL ($6::text[]) THEN 'WRONG_STATE'
                    WHEN $3 = 'WORKFLOW_ACTION' AND d.workflow_id IS NOT NULL THEN 'ALREADY_IN_WORKFLOW'
                    WHEN $3 = 'EXIT_WORKFLOW' AND d.workflow_id IS DISTINCT FROM $7::text THEN 'NOT_IN_WORKFLOW'
                END AS error_code
            FROM requested r
            LEFT JOIN devices d ON d.tenant_id = $1 AND d.device_uid = r.device_uid
        )
        INSERT INTO batch_action_devices
            (tenant_id, batch_action_id, device_uid, action, workflow_id, outcome, error_code, event_id)
        SELECT $1, $2, device_uid, $3, $7::text, CASE WHEN error_code IS NULL THEN 'SUCCESS' ELSE 'FAIL' END,
               error_code, $8
        FROM classified
        ORDER BY device_uid
        ON CONFLICT (tenant_id, batch_action_id, device_uid) DO NOTHING
        RETURNING device_uid, outcome
        """

    /// The classification statement of one event: its SQL and parameters.
    static func classification(of envelope: Envelope, _ command: Command) -> (sql: String, parameters: [PostgresValue])
    {
        let allowed = command.action.allowedStates.map { states in
            PostgresValue.textArray(DeviceState.allCases.filter(states.contains).map(\.rawValue))
        }
        return (
            classifySQL,
            [
                .text(envelope.tenantID), .text(command.batchActionID), .text(command.action.rawValue),
                .textArray(command.deviceUIDs), PostgresValue(command.serviceTypeID), allowed ?? .null,
                PostgresValue(command.workflowID), .text(envelope.eventID),
            ]
        )
    }

    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        // One statement per event, all in one round trip, executed in offset order.
        let results = try context.connection.pipeline { pipeline in
            for input in inputs {
                let statement = Self.classification(of: input.envelope, input.command)
                try pipeline.query(statement.sql, statement.parameters)
            }
        }

        var outcomes: [EventOutcome] = []
        var messages: [OutboxMessage] = []
        for (input, result) in zip(inputs, results) {
            outcomes.append(result.rowCount > 0 ? .applied : .duplicate)
            var succeeded = Set<String>()
            for row in result where try row.decode(String.self, column: 1) == "SUCCESS" {
                succeeded.insert(try row.decode(String.self, column: 0))
            }
            guard !succeeded.isEmpty else { continue }
            let command = input.command
            for uid in command.deviceUIDs where succeeded.contains(uid) {
                messages.append(
                    OutboundEvent(
                        type: Self.dispatchedType, tenantID: input.envelope.tenantID,
                        aggregateID: "\(command.batchActionID)/\(uid)", topic: topic, key: uid, source: input.envelope, traceHeaders: input.traceHeaders,
                        data: [
                            "batch_action_id": .string(command.batchActionID),
                            "device_uid": .string(uid),
                            "action": .string(command.action.rawValue),
                            "workflow_id": command.workflowID.map(JSONValue.string) ?? .null,
                        ]
                    ).outboxMessage)
            }
        }
        try context.publish(messages)
        return outcomes
    }
}
