import OnceDomain
import OnceJSON
import OncePostgres
import Testing

@Suite("Jobs: one job per request", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct JobsTests {
    @Test("two emissions of a request (frontend and backend) make one job and one job.created")
    func twoEmissionsOneJob() throws {
        try withHarness { h in
            let frontend = h.jobRequest("r-1", customers: ["c-2", "c-1", "c-3"])
            let backend = h.jobRequest("r-1", customers: ["c-2", "c-1", "c-3"])
            let report = try h.process([frontend, backend])
            #expect(report[.applied] == 1 && report[.duplicate] == 1)
            #expect(try h.outcome(of: eventID(of: backend)) == "duplicate")
            // A third emission later, customers in another order: the same request.
            let late = h.jobRequest("r-1", customers: ["c-3", "c-2", "c-1"])
            #expect(try h.process(late)[.duplicate] == 1)

            #expect(try h.scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
            let job = try #require(
                h.db.query(
                    """
                    SELECT job_id::text, user_id, action_code, action_name, customer_ids, event_id
                    FROM jobs WHERE tenant_id = $1 AND request_id = 'r-1'
                    """, [.text(h.tenant)]
                ).first)
            let jobID = try job.decode(String.self, column: 0)
            #expect(jobID == JobRequestedHandler.jobID(tenantID: h.tenant, requestID: "r-1"))
            #expect(try job.decode(String.self, column: 1) == "u-1")
            #expect(try job.decode(Int64.self, column: 2) == 7)
            #expect(try job.decode(String.self, column: 3) == "export")
            #expect(try job.decode([String].self, column: 4) == ["c-2", "c-1", "c-3"])
            #expect(try job.decode(String.self, column: 5) == eventID(of: frontend))

            let outbox = try h.db.query(
                "SELECT topic, message_key, payload FROM outbox WHERE tenant_id = $1 AND event_type = 'job.created'",
                [.text(h.tenant)])
            #expect(outbox.count == 1)
            let row = try #require(outbox.first)
            #expect(try row.decode(String.self, column: 0) == "jobs-created")
            #expect(try row.decode(String.self, column: 1) == "r-1")
            let expected: JSONValue = [
                "event_id": .string(
                    Domain.outboundEventID(type: "job.created", tenantID: h.tenant, aggregateID: "r-1")),
                "type": "job.created", "version": 1, "tenant_id": .string(h.tenant),
                "occurred_at": "2026-11-22T10:00:00Z",
                "data": [
                    "job_id": .string(jobID), "request_id": "r-1", "action_code": 7, "action_name": "export",
                    "customer_ids": ["c-2", "c-1", "c-3"],
                ],
            ]
            #expect(try row.decode([UInt8].self, column: 2) == JSONWriter.serialize(expected))
        }
    }

    @Test("an emission that asks for something else is a conflict, kept for the audit, and makes no job")
    func conflictingEmission() throws {
        try withHarness { h in
            let first = h.jobRequest("r-2")
            let renamed = h.jobRequest("r-2", actionName: "delete")
            let report = try h.process([first, renamed])
            #expect(report[.applied] == 1 && report[.conflict] == 1)
            let otherUser = h.jobRequest("r-2", user: "u-9")
            let otherCustomers = h.jobRequest("r-2", customers: ["c-1"])
            #expect(try h.process([otherUser, otherCustomers])[.conflict] == 2)
            #expect(try h.scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
            #expect(
                try h.scalar("SELECT (action_name = 'export')::int FROM jobs WHERE tenant_id = $1", [.text(h.tenant)])
                    == 1)
            let conflicts = try h.db.query(
                "SELECT event_id, action_name, existing_event_id FROM job_conflicts WHERE tenant_id = $1 ORDER BY id",
                [.text(h.tenant)])
            #expect(conflicts.count == 3)
            #expect(try conflicts.first?.decode(String.self, column: 0) == eventID(of: renamed))
            #expect(try conflicts.first?.decode(String.self, column: 1) == "delete")
            #expect(try conflicts.first?.decode(String.self, column: 2) == eventID(of: first))
            #expect(try h.outbox("job.created").count == 1)
        }
    }

    @Test("many requests in one call each get their job")
    func manyRequests() throws {
        try withHarness { h in
            let values = (0..<200).map {
                h.jobRequest("r-\($0 % 150)", customers: (0...($0 % 150 % 5)).map { "c-\($0)" })
            }
            let report = try h.process(values)
            #expect(report[.applied] == 150 && report[.duplicate] == 50)
            #expect(try h.scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1", [.text(h.tenant)]) == 150)
            #expect(try h.outbox("job.created").count == 150)
        }
    }
}
