import OnceDomain
import OncePostgres
import Testing

@Suite("Invalid data is dead-lettered with the field named", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct InvalidDataTests {
    /// Processes `value` alone and returns its dead letter's (reason_code, error).
    private func deadLetter(_ h: Harness, _ value: [UInt8]) throws -> (reason: String, error: String) {
        let report = try h.process(value)
        #expect(report[.deadLettered] == 1)
        let id = try eventID(of: value)
        #expect(try h.outcome(of: id) == "dead_lettered")
        return try #require(try h.deadLetter(id))
    }

    @Test("batch.completed with credits -5 → invalid_data naming data.credits; nothing charged")
    func negativeCredits() throws {
        try withHarness { h in
            let letter = try deadLetter(h, h.completion(batch: "b-1", account: "acc-1", credits: -5))
            #expect(letter.reason == "invalid_data")
            #expect(letter.error == "data.credits must be an integer from 0 to 1000000")
            #expect(try h.balance("acc-1") == nil)
            // Too many credits, a fraction, a missing batch id: each names its field.
            #expect(
                try deadLetter(h, h.completion(batch: "b-1", account: "acc-1", credits: 1_000_001)).error.hasPrefix(
                    "data.credits"))
            let fraction = h.event("batch.completed", ["batch_id": "b-1", "account_id": "acc-1", "credits": 5.0])
            #expect(try deadLetter(h, fraction).error.hasPrefix("data.credits"))
            let noBatch = h.event("batch.completed", ["account_id": "acc-1", "credits": 5])
            #expect(try deadLetter(h, noBatch).error.hasPrefix("data.batch_id is required"))
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
        }
    }

    @Test("credits.granted with 0 credits → invalid_data naming data.credits")
    func zeroGrant() throws {
        try withHarness { h in
            let letter = try deadLetter(h, h.grant("g-1", account: "acc-1", credits: 0))
            #expect(letter.reason == "invalid_data")
            #expect(letter.error == "data.credits must be an integer from 1 to 1000000000")
        }
    }

    @Test("batch_action.requested with 10,001 devices → invalid_data naming data.devices; no rows")
    func tooManyDevices() throws {
        try withHarness { h in
            let uids = (0...10_000).map { "SN-\($0)" }
            let letter = try deadLetter(h, h.batchAction("ba-1", action: .lock, devices: uids))
            #expect(letter.reason == "invalid_data")
            #expect(letter.error == "data.devices must be an array of 1 to 10000 objects")
            #expect(
                try h.scalar("SELECT count(*) FROM batch_action_devices WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
            // And the other rules of the event.
            let noWorkflow = h.batchAction("ba-2", action: .exitWorkflow, devices: ["SN-1"])
            #expect(
                try deadLetter(h, noWorkflow).error
                    == "data.workflow_id is required for EXIT_WORKFLOW: a string of 1 to 128 characters")
            let badAction = h.event(
                "batch_action.requested",
                ["batch_action_id": "ba-3", "action": "REBOOT", "devices": [["device_uid": "SN-1"]]])
            #expect(try deadLetter(h, badAction).error.hasPrefix("data.action must be one of"))
            let badDevice = h.event(
                "batch_action.requested",
                ["batch_action_id": "ba-3", "action": "LOCK", "devices": [["device_uid": "SN-1"], ["uid": "SN-2"]]])
            #expect(try deadLetter(h, badDevice).error.hasPrefix("data.devices[1].device_uid is required"))
            let badService = h.event(
                "batch_action.requested",
                [
                    "batch_action_id": "ba-3", "action": "LOCK", "service_type_id": 1.5,
                    "devices": [["device_uid": "SN-1"]],
                ])
            #expect(try deadLetter(h, badService).error.hasPrefix("data.service_type_id"))
        }
    }

    @Test("job.requested without customer_ids → invalid_data naming data.customer_ids; no job")
    func jobWithoutCustomers() throws {
        try withHarness { h in
            let value = h.event(
                "job.requested", ["request_id": "r-1", "user_id": "u-1", "action_code": 3, "action_name": "export"])
            let letter = try deadLetter(h, value)
            #expect(letter.reason == "invalid_data")
            #expect(letter.error == "data.customer_ids is required: an array of 1 to 1000 strings")
            #expect(try h.scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
            let tooMany = h.jobRequest("r-1", customers: (0...1000).map { "c-\($0)" })
            #expect(try deadLetter(h, tooMany).error == "data.customer_ids must be an array of 1 to 1000 strings")
            let longName = h.jobRequest("r-1", actionName: String(repeating: "n", count: 129))
            #expect(try deadLetter(h, longName).error.hasPrefix("data.action_name must be a string of 1 to 128"))
        }
    }

    @Test("a bad event in a batch does not hold back the good ones around it")
    func poisonInTheMiddle() throws {
        try withHarness { h in
            let report = try h.process([
                h.completion(batch: "b-1", account: "acc-1", credits: 5),
                h.completion(batch: "b-2", account: "acc-1", credits: -5),
                h.completion(batch: "b-3", account: "acc-1", credits: 6),
            ])
            #expect(report[.applied] == 2 && report[.deadLettered] == 1)
            #expect(try h.balance("acc-1") == -11)
        }
    }
}
