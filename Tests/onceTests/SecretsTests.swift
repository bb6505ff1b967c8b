import Foundation
import OnceTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A run whose database password and SASL password are unique markers, given through the file
/// forms: neither marker appears in any log line (text or JSON, debug level), error, `status`
/// or `audit` output, `/metrics`, or the process's arguments as `ps` shows them.
@Suite(.timeLimit(.minutes(3)), .serialized)
struct SecretsTests {
    @Test func noSecretAppearsAnywhere() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        _ = try await fixture.produce([fixture.grant("s1"), Array("{poison".utf8), fixture.grant("s2")])
        let password = "pw" + TestServices.unique("marker").replacingOccurrences(of: "-", with: "")
        let saslPassword = "sasl" + TestServices.unique("marker").replacingOccurrences(of: "-", with: "")
        var components = try #require(URLComponents(string: fixture.database.url))
        components.password = password
        let secretURL = try #require(components.string)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestServices.unique("secrets"))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let urlFile = directory.appendingPathComponent("database-url")
        try (secretURL + "\n").write(to: urlFile, atomically: true, encoding: .utf8)
        let propertiesFile = directory.appendingPathComponent("kafka.properties")
        try "# secrets\nsasl.username=once\nsasl.password=\(saslPassword)\n".write(to: propertiesFile, atomically: true, encoding: .utf8)
        let common = [
            "--database-url-file", urlFile.path, "--kafka-properties-file", propertiesFile.path,
            "--brokers", fixture.brokers, "--group", fixture.group, "--topics", fixture.topic,
        ]
        var seen: [String: String] = [:]

        for format in ["text", "json"] {
            let member = try OnceProcess(
                ["run"] + common + [
                    "--kafka-property", "max.poll.interval.ms=6000", "--kafka-property", "session.timeout.ms=6000",
                    "--log-level", "debug", "--log-format", format,
                ])
            try await eventually("the records processed", timeout: .seconds(60)) {
                try fixture.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") == 3
            }
            // What `ps` shows: the process's own argument vector.
            let cmdline = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(member.process.processIdentifier)/cmdline"))
            let arguments = String(decoding: cmdline.readDataToEndOfFile(), as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
            try cmdline.close()
            seen["arguments (\(format))"] = arguments
            #expect(arguments.contains(urlFile.path), "the arguments are read: \(arguments)")
            let port = try await httpPort(of: member)
            let address = try #require(URL(string: "http://127.0.0.1:\(port)/metrics"))
            let (data, _) = try await URLSession.shared.data(from: address)
            seen["metrics (\(format))"] = String(decoding: data, as: UTF8.self)
            member.signal(SIGTERM)
            #expect(try await member.waitForExit(timeout: .seconds(30)) == 0, "\(member.output)")
            seen["log (\(format))"] = member.output
        }
        for command in [["status"], ["status", "--format", "json"], ["dlq", "list"], ["offsets", "show"]] {
            seen["once \(command.joined(separator: " "))"] = try await OnceProcess.run(command + common).output
        }
        seen["once audit"] = try await OnceProcess.run(
            ["audit", "credits", "--database-url-file", urlFile.path, "--group", fixture.group]).output
        // Errors: a database that does not exist, and a broker that does not answer.
        components.path = "/once_no_such_database"
        let wrongFile = directory.appendingPathComponent("wrong-url")
        try (try #require(components.string)).write(to: wrongFile, atomically: true, encoding: .utf8)
        let wrongDatabase = try await OnceProcess.run(["run", "--database-url-file", wrongFile.path] + common.dropFirst(2))
        #expect(wrongDatabase.status != 0)
        seen["error: no database"] = wrongDatabase.output
        let noBroker = try await OnceProcess.run(
            ["run"] + common.prefix(4) + ["--brokers", "127.0.0.1:1", "--group", fixture.group, "--topics", fixture.topic],
            timeout: .seconds(60))
        #expect(noBroker.status != 0)
        seen["error: no broker"] = noBroker.output

        for (place, text) in seen.sorted(by: { $0.key < $1.key }) {
            #expect(!text.contains(password), "the database password appears in \(place)")
            #expect(!text.contains(saslPassword), "the SASL password appears in \(place)")
        }
        #expect(seen.count == 13)
        await fixture.tearDown()
    }
}
