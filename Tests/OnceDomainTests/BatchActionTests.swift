import Foundation
import OnceDomain
import OnceJSON
import OncePostgres
import Testing

@Suite("Batch actions: device rules, one row per device", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct BatchActionTests {
    private func device(
        _ h: Harness, _ uid: String, _ state: DeviceState, service: Int64? = nil, workflow: String? = nil,
        deletedAt: String? = nil, tenant: String? = nil
    ) -> DeviceRecord {
        DeviceRecord(
            tenantID: tenant ?? h.tenant, deviceUID: uid, state: state, serviceTypeID: service, workflowID: workflow,
            deletedAt: deletedAt)
    }

    @Test(
        "rule 1: a uid that is neither 15 digits nor 4-64 of [A-Za-z0-9-] fails INVALID_DEVICE_UID, even if registered")
    func rule1InvalidUID() throws {
        try withHarness { h in
            try h.registerDevices([device(h, "490154203237518", .idle), device(h, "SN-0001", .idle)])
            // A registry row with a malformed uid (written around the importer) does not rescue it.
            try h.db.execute(
                "INSERT INTO devices (tenant_id, device_uid, state) VALUES ($1, 'SN_0001', 'IDLE')", [.text(h.tenant)])
            let long = String(repeating: "x", count: 65)
            let report = try h.process(
                h.batchAction(
                    "ba-1", action: .register,
                    devices: [
                        "abc", "SN_0001", "", long, "ÄBCD", "SN 0001", "1234567890123456789", "490154203237518",
                        "SN-0001",
                    ]))
            #expect(report[.applied] == 1)
            let results = try h.deviceResults("ba-1")
            for uid in ["abc", "SN_0001", "", long, "ÄBCD", "SN 0001"] {
                #expect(results[uid] == "INVALID_DEVICE_UID", "\(uid)")
            }
            // 19 digits is not an IMEI but is a valid serial; it is simply not registered.
            #expect(results["1234567890123456789"] == "DEVICE_NOT_FOUND")
            #expect(results["490154203237518"] == "SUCCESS")
            #expect(results["SN-0001"] == "SUCCESS")
            #expect(results.count == 9)
        }
    }

    @Test("rule 2: unknown and deleted devices fail DEVICE_NOT_FOUND, before the service type is looked at")
    func rule2NotFound() throws {
        try withHarness { h in
            try h.registerDevices([
                device(h, "SN-DELETED", .idle, deletedAt: "2026-01-01T00:00:00Z"),
                device(h, "SN-DELETED-SVC", .active, service: 1, deletedAt: "2026-01-01T00:00:00+02:00"),
                device(h, "SN-HERE", .idle, service: 9),
            ])
            try h.process(
                h.batchAction(
                    "ba-2", action: .register, devices: ["SN-MISSING", "SN-DELETED", "SN-DELETED-SVC", "SN-HERE"],
                    serviceTypeID: 9))
            #expect(
                try h.deviceResults("ba-2") == [
                    "SN-MISSING": "DEVICE_NOT_FOUND", "SN-DELETED": "DEVICE_NOT_FOUND",
                    "SN-DELETED-SVC": "DEVICE_NOT_FOUND", "SN-HERE": "SUCCESS",
                ])
        }
    }

    @Test("rule 2: another tenant's device is reported exactly as a device that does not exist")
    func rule2OtherTenant() throws {
        try withHarness { h in
            let other = h.tenant + "-other"
            try h.registerDevices([device(h, "SN-THEIRS", .idle, tenant: other)])
            try h.process(h.batchAction("ba-3", action: .register, devices: ["SN-THEIRS", "SN-NOBODY"]))
            let rows = try h.db.query(
                """
                SELECT device_uid, outcome, error_code FROM batch_action_devices
                WHERE tenant_id = $1 AND batch_action_id = 'ba-3' ORDER BY device_uid
                """, [.text(h.tenant)])
            #expect(rows.count == 2)
            for row in rows {
                #expect(try row.decode(String.self, column: 1) == "FAIL")
                #expect(try row.decode(String.self, column: 2) == "DEVICE_NOT_FOUND")
            }
            #expect(try h.outbox("batch_action.device_dispatched").isEmpty)
            // The owner's own batch action finds it.
            try h.process(h.batchAction("ba-3", action: .register, devices: ["SN-THEIRS"], tenant: other))
            #expect(
                try h.scalar(
                    "SELECT count(*) FROM batch_action_devices WHERE tenant_id = $1 AND outcome = 'SUCCESS'",
                    [.text(other)]) == 1)
        }
    }

    @Test("rule 3: a given service_type_id that differs fails WRONG_SERVICE_TYPE, before the state is looked at")
    func rule3ServiceType() throws {
        try withHarness { h in
            try h.registerDevices([
                device(h, "SN-SVC7", .idle, service: 7),
                device(h, "SN-NOSVC", .idle),
                device(h, "SN-SVC7-ACTIVE", .active, service: 7),
            ])
            try h.process(
                h.batchAction(
                    "ba-4", action: .register, devices: ["SN-SVC7", "SN-NOSVC", "SN-SVC7-ACTIVE"], serviceTypeID: 8))
            #expect(
                try h.deviceResults("ba-4") == [
                    "SN-SVC7": "WRONG_SERVICE_TYPE", "SN-NOSVC": "WRONG_SERVICE_TYPE",
                    "SN-SVC7-ACTIVE": "WRONG_SERVICE_TYPE",
                ])
            // Matching, or not given: the service type does not decide.
            try h.process(
                h.batchAction("ba-5", action: .register, devices: ["SN-SVC7", "SN-SVC7-ACTIVE"], serviceTypeID: 7))
            #expect(try h.deviceResults("ba-5") == ["SN-SVC7": "SUCCESS", "SN-SVC7-ACTIVE": "WRONG_STATE"])
            try h.process(h.batchAction("ba-6", action: .register, devices: ["SN-SVC7", "SN-NOSVC"]))
            #expect(try h.deviceResults("ba-6") == ["SN-SVC7": "SUCCESS", "SN-NOSVC": "SUCCESS"])
        }
    }

    @Test("rule 4: a state the action does not allow fails WRONG_STATE, before the workflow is looked at")
    func rule4WrongState() throws {
        try withHarness { h in
            try h.registerDevices([
                device(h, "SN-IDLE", .idle),
                device(h, "SN-IDLE-WF", .idle, workflow: "wf-1"),
                device(h, "SN-ACTIVE", .active),
            ])
            try h.process(h.batchAction("ba-7", action: .lock, devices: ["SN-IDLE", "SN-ACTIVE"]))
            #expect(try h.deviceResults("ba-7") == ["SN-IDLE": "WRONG_STATE", "SN-ACTIVE": "SUCCESS"])
            try h.process(h.batchAction("ba-8", action: .workflowAction, devices: ["SN-IDLE-WF"], workflowID: "wf-2"))
            #expect(try h.deviceResults("ba-8") == ["SN-IDLE-WF": "WRONG_STATE"])
        }
    }

    @Test("rule 5: WORKFLOW_ACTION on a device that has a workflow fails ALREADY_IN_WORKFLOW")
    func rule5AlreadyInWorkflow() throws {
        try withHarness { h in
            try h.registerDevices([device(h, "SN-BUSY", .active, workflow: "wf-9"), device(h, "SN-FREE", .active)])
            try h.process(
                h.batchAction("ba-9", action: .workflowAction, devices: ["SN-BUSY", "SN-FREE"], workflowID: "wf-1"))
            #expect(try h.deviceResults("ba-9") == ["SN-BUSY": "ALREADY_IN_WORKFLOW", "SN-FREE": "SUCCESS"])
            let dispatched = try h.outbox("batch_action.device_dispatched")
            #expect(dispatched["ba-9/SN-FREE"]?["data"]?["workflow_id"] == "wf-1")
        }
    }

    @Test("rule 6: EXIT_WORKFLOW on a device not in that workflow fails NOT_IN_WORKFLOW")
    func rule6NotInWorkflow() throws {
        try withHarness { h in
            try h.registerDevices([
                device(h, "SN-WF1", .locked, workflow: "wf-1"),
                device(h, "SN-WF2", .active, workflow: "wf-2"),
                device(h, "SN-NONE", .idle),
            ])
            try h.process(
                h.batchAction(
                    "ba-10", action: .exitWorkflow, devices: ["SN-WF1", "SN-WF2", "SN-NONE"], workflowID: "wf-1"))
            #expect(
                try h.deviceResults("ba-10") == [
                    "SN-WF1": "SUCCESS", "SN-WF2": "NOT_IN_WORKFLOW", "SN-NONE": "NOT_IN_WORKFLOW",
                ])
        }
    }

    @Test("rule 7: otherwise SUCCESS, one device_dispatched per device, and the registry is not changed")
    func rule7Success() throws {
        try withHarness { h in
            try h.registerDevices([
                device(h, "490154203237518", .locked, service: 3, workflow: "wf-1"),
                device(h, "SN-0002", .readyForUse),
            ])
            func registry() throws -> [String] {
                try h.db.query(
                    """
                    SELECT concat_ws('|', device_uid, state, service_type_id, workflow_id, deleted_at, updated_at)
                    FROM devices WHERE tenant_id = $1 ORDER BY device_uid
                    """, [.text(h.tenant)]
                ).map { try $0.decode(String.self, column: 0) }
            }
            let before = try registry()
            let value = h.batchAction(
                "ba-11", action: .deregister, devices: ["490154203237518", "SN-0002"], serviceTypeID: nil)
            let report = try h.process(value)
            #expect(report[.applied] == 1)
            #expect(try h.deviceResults("ba-11") == ["490154203237518": "SUCCESS", "SN-0002": "SUCCESS"])
            #expect(try registry() == before)

            let row = try #require(
                h.db.query(
                    """
                    SELECT topic, message_key, payload, event_id FROM outbox o
                    JOIN batch_action_devices b ON b.tenant_id = o.tenant_id
                        AND o.aggregate_id = b.batch_action_id || '/' || b.device_uid
                    WHERE o.tenant_id = $1 AND o.aggregate_id = 'ba-11/490154203237518'
                    """, [.text(h.tenant)]
                ).first)
            #expect(try row.decode(String.self, column: 0) == "device-dispatch")
            #expect(try row.decode(String.self, column: 1) == "490154203237518")
            #expect(try row.decode(String.self, column: 3) == eventID(of: value))
            let expected: JSONValue = [
                "event_id": .string(
                    Domain.outboundEventID(
                        type: "batch_action.device_dispatched", tenantID: h.tenant, aggregateID: "ba-11/490154203237518"
                    )),
                "type": "batch_action.device_dispatched", "version": 1, "tenant_id": .string(h.tenant),
                "occurred_at": "2026-11-22T10:00:00Z",
                "data": [
                    "batch_action_id": "ba-11", "device_uid": "490154203237518", "action": "DEREGISTER",
                    "workflow_id": .null,
                ],
            ]
            #expect(try row.decode([UInt8].self, column: 2) == JSONWriter.serialize(expected))
            #expect(try h.outbox("batch_action.device_dispatched").count == 2)
        }
    }

    @Test("allowed states: every action against every state", arguments: DeviceAction.allCases)
    func allowedStates(action: DeviceAction) throws {
        try withHarness { h in
            // For EXIT_WORKFLOW every device is in the event's workflow; for the others none is in any.
            let workflow: String? = action.requiresWorkflow ? "wf-1" : nil
            try h.registerDevices(
                DeviceState.allCases.map { state in
                    device(
                        h, "SN-\(state.rawValue.replacingOccurrences(of: "_", with: "-"))", state,
                        workflow: action == .exitWorkflow ? "wf-1" : nil)
                })
            let uids = DeviceState.allCases.map { "SN-\($0.rawValue.replacingOccurrences(of: "_", with: "-"))" }
            try h.process(h.batchAction("ba-\(action.rawValue)", action: action, devices: uids, workflowID: workflow))
            let results = try h.deviceResults("ba-\(action.rawValue)")
            let allowed: [DeviceAction: Set<DeviceState>] = [
                .register: [.idle],
                .deregister: [.readyForUse, .active, .locked],
                .lock: [.active],
                .unlock: [.locked],
                .workflowAction: [.readyForUse, .active, .locked],
                .exitWorkflow: Set(DeviceState.allCases),
            ]
            for (state, uid) in zip(DeviceState.allCases, uids) {
                let expected = allowed[action]!.contains(state) ? "SUCCESS" : "WRONG_STATE"
                #expect(results[uid] == expected, "\(action.rawValue) on \(state.rawValue)")
            }
        }
    }

    @Test("a uid repeated inside one event gives one row and one dispatch")
    func duplicateUIDsInOneEvent() throws {
        try withHarness { h in
            try h.registerDevices([device(h, "SN-0001", .active)])
            let report = try h.process(
                h.batchAction("ba-12", action: .lock, devices: ["SN-0001", "SN-0001", "bad", "bad", "SN-0001"]))
            #expect(report[.applied] == 1)
            #expect(try h.deviceResults("ba-12") == ["SN-0001": "SUCCESS", "bad": "INVALID_DEVICE_UID"])
            #expect(try h.outbox("batch_action.device_dispatched").count == 1)
        }
    }

    @Test("the same device in two chunks of one batch action keeps its first row, in one call or two")
    func sameDeviceInTwoChunks() throws {
        try withHarness { h in
            try h.registerDevices([device(h, "SN-A", .active), device(h, "SN-B", .active), device(h, "SN-C", .idle)])
            let chunk1 = h.batchAction("ba-13", action: .lock, devices: ["SN-A", "SN-B"])
            let chunk2 = h.batchAction("ba-13", action: .lock, devices: ["SN-B", "SN-C"])
            let chunk3 = h.batchAction("ba-13", action: .lock, devices: ["SN-A", "SN-C"])
            // Chunks 1 and 2 in one handler call, chunk 3 later.
            let report = try h.process([chunk1, chunk2])
            #expect(report[.applied] == 2)
            #expect(try h.process(chunk3)[.duplicate] == 1)
            #expect(try h.outcome(of: eventID(of: chunk3)) == "duplicate")
            #expect(try h.deviceResults("ba-13") == ["SN-A": "SUCCESS", "SN-B": "SUCCESS", "SN-C": "WRONG_STATE"])
            let owner = try h.db.query(
                """
                SELECT event_id FROM batch_action_devices
                WHERE tenant_id = $1 AND batch_action_id = 'ba-13' AND device_uid = 'SN-B'
                """,
                [.text(h.tenant)])
            #expect(try owner.first?.decode(String.self, column: 0) == eventID(of: chunk1))
            #expect(try h.outbox("batch_action.device_dispatched").count == 2)
        }
    }

    @Test("a replayed chunk, as the same record or re-emitted with a new event id, changes nothing")
    func replayedChunk() throws {
        try withHarness { h in
            try h.registerDevices([device(h, "SN-A", .locked), device(h, "SN-B", .idle)])
            let chunk = h.batchAction("ba-14", action: .unlock, devices: ["SN-A", "SN-B"])
            #expect(try h.process(chunk)[.applied] == 1)
            #expect(try h.process(chunk)[.duplicate] == 1)
            // The registry changing afterwards does not re-classify recorded devices.
            try h.registerDevices([device(h, "SN-B", .locked)])
            let reemitted = h.batchAction("ba-14", action: .unlock, devices: ["SN-A", "SN-B"])
            #expect(try h.process([reemitted, chunk])[.duplicate] == 2)
            #expect(try h.outcome(of: eventID(of: reemitted)) == "duplicate")
            #expect(try h.deviceResults("ba-14") == ["SN-A": "SUCCESS", "SN-B": "WRONG_STATE"])
            #expect(try h.outbox("batch_action.device_dispatched").count == 1)
        }
    }

    @Test("a 10,000-device event is classified in one call: exactly 10,000 rows")
    func tenThousandDevices() throws {
        try withHarness { h in
            // Every other device is registered (ACTIVE); the rest are unknown.
            let uids = (0..<10_000).map { String(format: "SN-%06d", $0) }
            try h.registerDevices(
                uids.enumerated().filter { $0.offset % 2 == 0 }.map { device(h, $0.element, .active) })
            let value = h.batchAction("ba-big", action: .lock, devices: uids)
            let report = try h.process(value)
            #expect(report[.applied] == 1)
            #expect(report.outboxRows == 5_000)
            #expect(
                try h.scalar(
                    "SELECT count(*) FROM batch_action_devices WHERE tenant_id = $1 AND batch_action_id = 'ba-big'",
                    [.text(h.tenant)]) == 10_000)
            #expect(
                try h.scalar(
                    """
                    SELECT count(*) FROM batch_action_devices
                    WHERE tenant_id = $1 AND batch_action_id = 'ba-big' AND outcome = 'SUCCESS'
                    """, [.text(h.tenant)]) == 5_000)
            // The same devices again, in two new chunks: nothing more.
            let again1 = h.batchAction("ba-big", action: .lock, devices: Array(uids[..<6_000]))
            let again2 = h.batchAction("ba-big", action: .lock, devices: Array(uids[4_000...]))
            #expect(try h.process([again1, again2])[.duplicate] == 2)
            #expect(
                try h.scalar(
                    "SELECT count(*) FROM batch_action_devices WHERE tenant_id = $1 AND batch_action_id = 'ba-big'",
                    [.text(h.tenant)]) == 10_000)
        }
    }
}
