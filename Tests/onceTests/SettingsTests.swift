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
