import Foundation
import Testing

@testable import once

@Suite struct SettingsTests {
    @Test func flagsWinOverEnvironmentOverFile() throws {
        let file = """
            # comment
            database_url = postgresql://file/db
            brokers = file:9092
            group_id = from-file
            topics = a, b
            kafka.security.protocol = ssl
            """
        var flags = Settings.Flags()
        flags.configFile = "once.conf"
        flags.brokers = "flag:9092"
        flags.kafkaProperties = ["linger.ms=7"]
        let settings = try Settings.resolve(
            flags: flags, environment: ["ONCE_GROUP_ID": "from-env", "ONCE_KAFKA_PROPERTIES": "security.protocol=sasl_ssl"],
            readFile: { _ in file })
        #expect(settings.databaseURL == "postgresql://file/db")
        #expect(settings.brokers == "flag:9092")
        #expect(settings.consumerGroup == "from-env")
        #expect(settings.topics == ["a", "b"])
        #expect(settings.kafkaProperties == ["security.protocol": "sasl_ssl", "linger.ms": "7"])
    }

    @Test func defaultsFollowTheContract() throws {
        let settings = try Settings.resolve(flags: .init(), environment: [:])
        #expect(settings.consumerGroup == "once")
        #expect(settings.topics == ["completion-events", "batch-action-events", "job-events"])
        #expect(throws: SettingsError.self) { try settings.requireDatabaseURL() }
        #expect(throws: SettingsError.self) { try settings.requireBrokers() }
    }

    @Test func aDatabaseURLThatIsNeitherAURLNorPairsIsRefusedWithoutQuotingIt() throws {
        for bad in ["not a url", "localhost/db", "s3cret"] {
            var flags = Settings.Flags()
            flags.databaseURL = bad
            let settings = try Settings.resolve(flags: flags, environment: [:])
            let error = #expect(throws: SettingsError.self) { try settings.requireDatabaseURL() }
            #expect(error?.description.contains("postgresql://") == true)
            #expect(error?.description.contains(bad) == false, "the value is not quoted")
        }
        for good in ["postgresql://u@h/db", "postgres://h/db", "host=h dbname=db user=u"] {
            var flags = Settings.Flags()
            flags.databaseURL = good
            #expect(try Settings.resolve(flags: flags, environment: [:]).requireDatabaseURL() == good)
        }
    }

    @Test func secretsComeFromFilesAndTheirErrorsNameTheFileNotTheContent() throws {
        var flags = Settings.Flags()
        flags.databaseURLFile = "/run/secrets/url"
        flags.kafkaPropertiesFile = "/run/secrets/kafka"
        let files = [
            "/run/secrets/url": "postgresql://app:hunter2@db/once\n",
            "/run/secrets/kafka": "# SASL\nsasl.username=app\nsasl.password=hunter3\n",
        ]
        let settings = try Settings.resolve(flags: flags, environment: [:], readFile: { path in
            guard let text = files[path] else { throw CocoaError(.fileNoSuchFile) }
            return text
        })
        #expect(settings.databaseURL == "postgresql://app:hunter2@db/once")
        #expect(settings.kafkaProperties == ["sasl.username": "app", "sasl.password": "hunter3"])

        flags.kafkaPropertiesFile = "/run/secrets/bad"
        let error = #expect(throws: SettingsError.self) {
            try Settings.resolve(flags: flags, environment: [:], readFile: { path in
                if path == "/run/secrets/bad" { return "sasl.password hunter4\n" }
                return files[path] ?? ""
            })
        }
        #expect(error?.description.contains("/run/secrets/bad:1") == true, "\(String(describing: error))")
        #expect(error?.description.contains("hunter4") == false)
    }

    @Test func mistakesNameWhereTheyAre() {
        var flags = Settings.Flags()
        flags.configFile = "bad.conf"
        let error = #expect(throws: SettingsError.self) {
            _ = try Settings.resolve(flags: flags, environment: [:], readFile: { _ in "brokers = x\nnonsense here\n" })
        }
        #expect(error?.description.contains("bad.conf:2") == true)
        var property = Settings.Flags()
        property.kafkaProperties = ["novalue"]
        #expect(throws: SettingsError.self) { _ = try Settings.resolve(flags: property, environment: [:]) }
    }

    @Test func aPropertyValueMayHoldCommas() throws {
        let settings = try Settings.resolve(
            flags: Settings.Flags(),
            environment: ["ONCE_KAFKA_PROPERTIES": "debug=broker,topic,fetch.wait.max.ms=10, linger.ms=5"])
        #expect(settings.kafkaProperties == ["debug": "broker,topic", "fetch.wait.max.ms": "10", "linger.ms": "5"])
        #expect(throws: SettingsError.self) {
            _ = try Settings.resolve(flags: Settings.Flags(), environment: ["ONCE_KAFKA_PROPERTIES": "novalue,a=b"])
        }
    }
}
