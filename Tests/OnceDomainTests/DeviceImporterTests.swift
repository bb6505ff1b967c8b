import OnceDomain
import OncePostgres
import Testing

@Suite("Devices registry import", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct DeviceImporterTests {
    private func registry(_ h: Harness, tenant: String) throws -> [String] {
        try h.db.query(
            """
            SELECT concat_ws('|', device_uid, state, coalesce(service_type_id::text, '-'), coalesce(workflow_id, '-'),
                   coalesce(deleted_at::text, '-'), updated_at)
            FROM devices WHERE tenant_id = $1 ORDER BY device_uid
            """, [.text(tenant)]
        ).map { try $0.decode(String.self, column: 0) }
    }

    @Test("a good file imported twice gives the same rows; the second import changes nothing")
    func importTwice() throws {
        try withHarness { h in
            let csv = """
                tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at
                \(h.tenant),490154203237518,IDLE,3,,
                \(h.tenant),SN-0001,ACTIVE,,wf-1,
                \(h.tenant),SN-0002,LOCKED,7,"wf,quoted",2026-01-01T00:00:00+18:30
                \(h.tenant),SN-0003,READY_FOR_USE,,,\r
                \(h.tenant)-b,SN-0001,IDLE,,,

                """
            let importer = DeviceImporter(chunkSize: 2)
            let first = try importer.importCSV(csv, on: h.db)
            #expect(first.rows == 5 && first.inserted == 5 && first.updated == 0 && first.unchanged == 0)
            let rows = try registry(h, tenant: h.tenant)
            try #require(rows.count == 4)
            #expect(rows[0].hasPrefix("490154203237518|IDLE|3|-|-|"))
            #expect(rows[1].hasPrefix("SN-0001|ACTIVE|-|wf-1|-|"))
            #expect(rows[2].hasPrefix("SN-0002|LOCKED|7|wf,quoted|2025-12-31 05:30:00+00|"))
            #expect(rows[3].hasPrefix("SN-0003|READY_FOR_USE|-|-|-|"))

            let second = try importer.importCSV(csv, on: h.db)
            #expect(second.rows == 5 && second.inserted == 0 && second.updated == 0 && second.unchanged == 5)
            #expect(try registry(h, tenant: h.tenant) == rows)  // updated_at included: untouched

            // A changed device is updated, the rest left alone; columns may come in any order.
            let changed = """
                device_uid,tenant_id,state,deleted_at,workflow_id,service_type_id
                SN-0001,\(h.tenant),LOCKED,,wf-1,
                SN-0003,\(h.tenant),READY_FOR_USE,,,
                """
            let third = try importer.importCSV(changed, on: h.db)
            #expect(third.updated == 1 && third.unchanged == 1 && third.inserted == 0)
            let after = try registry(h, tenant: h.tenant)
            try #require(after.count == 4)
            #expect(after[1].hasPrefix("SN-0001|LOCKED|"))
            #expect(after[0] == rows[0] && after[2] == rows[2] && after[3] == rows[3])
        }
    }

    @Test("a bad row is an error naming its line and field, and nothing of the file is written")
    func badRows() throws {
        try withHarness { h in
            let header = "tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at"
            func failure(_ lines: [String]) -> DeviceImportError? {
                do {
                    _ = try DeviceImporter().importCSV(([header] + lines).joined(separator: "\n"), on: h.db)
                    Issue.record("expected the import to fail")
                    return nil
                } catch let error as DeviceImportError {
                    return error
                } catch {
                    Issue.record("unexpected error \(error)")
                    return nil
                }
            }
            let good = "\(h.tenant),SN-0001,IDLE,,,"
            let state = failure([good, "\(h.tenant),SN-0002,BROKEN,,,"])
            #expect(state?.line == 3)
            #expect(state?.field == "state")
            #expect(
                state?.description.hasPrefix("line 3: state must be one of IDLE, READY_FOR_USE, ACTIVE, LOCKED") == true
            )

            #expect(
                failure([good, "\(h.tenant),SN-0002,IDLE,,,", "\(h.tenant),SN-0003,IDLE,seven,,"])?.description
                    == "line 4: service_type_id must be an integer, not \"seven\"")
            #expect(failure(["\(h.tenant),SN-0003,IDLE,,,yesterday"])?.field == "deleted_at")
            #expect(failure(["\(h.tenant),bad uid,IDLE,,,"])?.field == "device_uid")
            #expect(failure(["bad tenant!,SN-0001,IDLE,,,"])?.field == "tenant_id")
            #expect(failure(["\(h.tenant),SN-0001,IDLE,,"])?.line == 2)
            let repeated = failure([good, "\(h.tenant),SN-0009,IDLE,,,", good])
            #expect(repeated?.line == 4 && repeated?.description.contains("of line 2") == true)
            let quotedNewline = failure(["\(h.tenant),SN-0001,IDLE,,\"wf\nnext\",", "\(h.tenant),SN-0002,NOPE,,,"])
            #expect(quotedNewline?.line == 4)  // the quoted field spans lines 2 and 3
            #expect(
                failure(["\(h.tenant),SN-0001,IDLE,,\"open,"])?.description == "line 2: a quoted field is not closed")

            do {
                _ = try DeviceImporter().importCSV("tenant_id,device_uid,state\n", on: h.db)
                Issue.record("a header without all columns must fail")
            } catch let error as DeviceImportError {
                #expect(error.line == 1 && error.field == "service_type_id")
            }
            #expect(try h.scalar("SELECT count(*) FROM devices WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
        }
    }
}
