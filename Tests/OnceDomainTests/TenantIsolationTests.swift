import OnceDomain
import OnceJSON
import OnceKafka
import OncePipeline
import OncePostgres
import Testing

/// Event ids are the producers' and unique only within a tenant (CONTRACT.md §2): the same id
/// in two tenants is two events, each with its effect; twice in one tenant, one event.
@Suite("Dedup per tenant", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct TenantIsolationTests {
    /// `make(tenant)` builds the same record (same event id, same business key) for a tenant;
    /// `effects(tenant)` counts the tenant's effect rows.
    private func check(
        _ h: Harness, _ make: (String) -> [UInt8], effects: (String) throws -> Int64,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let other = h.tenant + "-two"
        let id = try eventID(of: make(h.tenant))
        #expect(try eventID(of: make(other)) == id, sourceLocation: sourceLocation)

        // One batch: the id in two tenants, and twice in the first.
        let report = try h.process([make(h.tenant), make(other), make(h.tenant)])
        #expect(report[.applied] == 2, sourceLocation: sourceLocation)
        #expect(try h.outcome(of: id) == "applied", sourceLocation: sourceLocation)
        #expect(try h.outcome(of: id, tenant: other) == "applied", sourceLocation: sourceLocation)
        // Later batches: redeliveries in both tenants do nothing more.
        let again = try h.process([make(other), make(h.tenant)])
        #expect(again[.applied] == 0, sourceLocation: sourceLocation)

        #expect(try effects(h.tenant) == 1, sourceLocation: sourceLocation)
        #expect(try effects(other) == 1, sourceLocation: sourceLocation)
        #expect(
            try h.scalar(
                "SELECT count(*) FROM processed_messages WHERE consumer_group = $1 AND event_id = $2",
                [.text(Harness.consumerGroup), .text(id)]) == 2, sourceLocation: sourceLocation)
    }

    private func ledgerRows(_ h: Harness, _ kind: String) -> (String) throws -> Int64 {
        { tenant in
            try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1 AND kind = $2", [.text(tenant), .text(kind)])
        }
    }

    @Test("batch.completed: the same id in two tenants charges both; twice in one, once")
    func completions() throws {
        try withHarness { h in
            let id = newEventID()
            try check(h, { h.completion(batch: "b-1", account: "acct", credits: 10, id: id, tenant: $0) }, effects: ledgerRows(h, "charge"))
        }
    }

    @Test("credits.granted: the same id in two tenants grants both; twice in one, once")
    func grants() throws {
        try withHarness { h in
            let id = newEventID()
            try check(h, { h.grant("g-1", account: "acct", credits: 10, id: id, tenant: $0) }, effects: ledgerRows(h, "grant"))
        }
    }

    @Test("batch_action.requested: the same id in two tenants classifies both tenants' devices")
    func batchActions() throws {
        try withHarness { h in
            let other = h.tenant + "-two"
            try h.registerDevices([
                DeviceRecord(tenantID: h.tenant, deviceUID: "SN-0001", state: .idle),
                DeviceRecord(tenantID: other, deviceUID: "SN-0001", state: .idle),
            ])
            let id = newEventID()
            try check(
                h, { h.batchAction("ba-1", action: .register, devices: ["SN-0001"], id: id, tenant: $0) },
                effects: { tenant in
                    try h.scalar(
                        "SELECT count(*) FROM batch_action_devices WHERE tenant_id = $1 AND outcome = 'SUCCESS'",
                        [.text(tenant)])
                })
        }
    }

    @Test("job.requested: the same id in two tenants makes a job in each")
    func jobs() throws {
        try withHarness { h in
            let id = newEventID()
            try check(
                h, { h.jobRequest("r-1", id: id, tenant: $0) },
                effects: { tenant in try h.scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1", [.text(tenant)]) })
        }
    }

    @Test("poison keeps the synthetic id; its claim names the tenant when readable, else `?`")
    func poisonClaims() throws {
        try withHarness { h in
            let other = h.tenant + "-two"
            let noID = JSONWriter.serialize(["type": "job.requested", "version": 1, "tenant_id": .string(other)])
            let report = try h.process([Array("{not json".utf8), noID, h.event("no.such.type", id: "shared-1", [:])])
            #expect(report[.deadLettered] == 3)
            let claims = try h.db.query(
                """
                SELECT event_id, tenant_id FROM processed_messages
                WHERE consumer_group = $1 AND partition = $2 ORDER BY kafka_offset
                """, [.text(Harness.consumerGroup), .int32(h.partition)]
            ).map { [try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1)] }
            #expect(
                claims == [
                    ["kafka:test-events/\(h.partition)/0", ClaimKey.unknownTenant],
                    ["kafka:test-events/\(h.partition)/1", other],
                    ["shared-1", h.tenant],
                ])
            // The readable id of the rejected record does not shadow another tenant's event.
            #expect(try h.process(h.jobRequest("r-9", id: "shared-1", tenant: other))[.applied] == 1)
        }
    }
}
