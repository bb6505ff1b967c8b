import ArgumentParser
import OnceDomain

struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The devices registry that batch actions are classified against.",
        subcommands: [Import.self])

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load devices from a CSV file (tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at); idempotent.")

        @OptionGroup var connection: DatabaseOptions

        @Argument(help: "The CSV file, with a header line.")
        var file: String

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let client = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let path = file
            do {
                let report = try await client.withConnection { db in try DeviceImporter().importFile(atPath: path, on: db) }
                await client.close()
                print("devices: \(report.rows) rows, \(report.inserted) inserted, \(report.updated) updated, \(report.unchanged) unchanged")
            } catch let error as DeviceImportError {
                await client.close()
                throw CommandFailure("\(path): \(error)")
            }
        }
    }
}
