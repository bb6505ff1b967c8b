import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// Migration 8 on a database made before it: the time partitions of `processed_messages` and
/// `outbox` stop keeping room on their pages for updates, old and new alike.
@Suite(.timeLimit(.minutes(2)))
struct FullPagesMigrationTests {
    @Test func partitionsMadeBeforeAndAfterFillTheirPages() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline.filter { $0.version < 8 })
        defer { database.drop() }
        let connection = try database.connect()
        defer { connection.close() }
        /// Each partition of the two tables: its storage settings, and whether its unique key is there.
        func partitions() throws -> [String: String] {
            Dictionary(uniqueKeysWithValues: try connection.query(
                """
                SELECT p.partition,
                       coalesce(array_to_string(c.reloptions, ','), '')
                           || CASE WHEN EXISTS (SELECT 1 FROM pg_indexes i WHERE i.indexname = p.partition || '_key')
                                   THEN ' keyed' ELSE ' unkeyed' END
                FROM once_time_partitions p JOIN pg_class c ON c.relname = p.partition
                WHERE p.parent IN ('processed_messages', 'outbox')
                """
            ).map { (try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1)) })
        }
        let before = try partitions()
        #expect(before.count >= 4)
        for (name, settings) in before {
            #expect(settings == (name.hasPrefix("outbox") ? "fillfactor=50 keyed" : "fillfactor=85 keyed"), "\(name)")
        }

        try Migrator(migrations: Migration.pipeline).migrate(on: connection)
        let after = try partitions()
        #expect(after.keys == before.keys)
        #expect(after.values.allSatisfy { $0 == " keyed" }, "\(after)")

        // Partitions made from now on fill their pages too, and keep their keys.
        try connection.execute("SELECT once_ensure_partitions(now() + interval '10 days')")
        let later = try partitions()
        #expect(later.count > after.count)
        #expect(later.values.allSatisfy { $0 == " keyed" }, "\(later)")
    }
}
