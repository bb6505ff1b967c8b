import ArgumentParser
import OnceDomain
import OnceJSON

struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The devices registry that batch actions are classified against.",
        subcommands: [Import.self])

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load devices from a CSV file (tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at); idempotent.")

        typealias Format = TextOrJSON

        @OptionGroup var connection: DatabaseOptions

        @Argument(help: "The CSV file, with a header line.")
        var file: String

        @Option(help: "text or json.")
        var format: Format = .text

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let client = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let path = file
            do {
                let report = try await client.withConnection { db in try DeviceImporter().importFile(atPath: path, on: db) }
                await client.close()
                switch format {
                case .json: print(JSONWriter.serializeString(Self.json(report, file: path)))
                case .text:
                    print(
                        "devices: \(report.rows) rows, \(report.inserted) inserted, \(report.updated) updated, "
                            + "\(report.unchanged) unchanged")
                }
            } catch let error as DeviceImportError {
                await client.close()
                throw CommandFailure("\(path): \(error)")
            }
        }

        /// The counts of the text line; a file with a bad row fails as a whole (on stderr), so
        /// there is no partial report.
        static func json(_ report: DeviceImportReport, file: String) -> JSONValue {
            .object([
                "file": .string(file),
                "rows": .integer(Int64(report.rows)),
                "inserted": .integer(Int64(report.inserted)),
                "updated": .integer(Int64(report.updated)),
                "unchanged": .integer(Int64(report.unchanged)),
            ])
        }
    }
}
