import OncePostgres
import OnceSchema

/// Time partitions of a test database with a tiny interval, so that a test can see a
/// partition boundary pass, or a partition age out of the window, within seconds.
public enum TestPartitions {
    /// Replaces the interval partitions of an empty database's log tables with ones of `width`
    /// (an interval such as `1 second`), `ahead` of them past the current one.
    public static func repartition(_ db: PostgresConnection, width: String, ahead: Int) throws {
        for row in try db.query(
            "SELECT quote_ident(partition) FROM once_time_partitions WHERE isfinite(lower)")
        {
            try db.execute("DROP TABLE \(try row.decode(String.self, column: 0))")
        }
        try db.execute("DELETE FROM once_time_partitions WHERE isfinite(lower)")
        try db.execute(
            "UPDATE once_partitioning SET width = $1::interval, ahead = $2, oldest = NULL, newest = NULL",
            [.text(width), .int(ahead)])
        try TimePartitions.ensure(on: db)
    }
}
