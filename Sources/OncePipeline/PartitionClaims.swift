import Logging
import OnceBackoff
import OnceKafka
import OncePostgres

/// Claims assigned partitions in `consumer_offsets` (bumping their generation) and re-reads
/// fenced ones; retries while the database is away, and throws an error that retrying cannot
/// mend (`PostgresError.remedy`).
///
/// The statements are `StoredPositions`'; this type decides when to run them and tells the
/// scheduler what they found. Its loops end when their task is cancelled.
struct PartitionClaims: Sendable {
    let positions: StoredPositions
    let owner: String
    let control: PostgresSession
    let table: PartitionTable
    let lag: ConsumerLag
    let logger: Logger

    func claim(_ partitions: [TopicPartition]) async throws {
        let (positions, owner) = (self.positions, self.owner)
        guard let fences = try await untilDone("claiming \(partitions)", { db in try positions.claim(partitions, owner: owner, on: db) })
        else { return }
        for (partition, fence) in fences {
            logger.info(
                "claimed \(partition) at \(fence.nextOffset.map(String.init) ?? "earliest"), generation \(fence.generation)",
                metadata: [
                    "once.topic": "\(partition.topic)", "once.partition": "\(partition.partition)",
                    "once.offset": "\(fence.nextOffset.map(String.init) ?? "earliest")", "once.generation": "\(fence.generation)",
                ])
            table.claimed(partition, fence: fence)
            lag.claimed(partition, at: fence.nextOffset)
        }
    }

    /// After a fence: if this member still owns the partition (an operator reset it), adopt the
    /// new generation and position; otherwise stop working on it until the group revokes it.
    func reload(_ partition: TopicPartition) async throws {
        let positions = self.positions
        guard let row = try await untilDone("re-reading \(partition)", { db in try positions.claim(of: partition, on: db) }) else { return }
        if let (fence, rowOwner) = row, rowOwner == owner {
            logReset(partition, fence)
            table.claimed(partition, fence: fence)
            lag.claimed(partition, at: fence.nextOffset)
        } else {
            logTakeover(partition, by: row?.1)
            table.disowned(partition)
            lag.forget([partition])
        }
    }

    /// Runs `body` on the control session until it succeeds, with backoff; nil when cancelled.
    /// An error that retrying cannot mend is thrown.
    private func untilDone<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T? {
        var attempt = 0
        while true {
            do {
                return try await control.withConnection(body)
            } catch let failure as PostgresError where failure.remedy != nil {
                logger.critical("\(what) cannot succeed, stopping: \(failure)", metadata: .failure(failure))
                throw failure
            } catch {
                attempt += 1
                logger.warning("\(what) failed (attempt \(attempt)): \(error)", metadata: .failure(error))
                do { try await Backoff().sleep(attempt: attempt) } catch { return nil }
            }
        }
    }
}

extension PartitionClaims {
    /// The periodic reset check: one query for the idle partitions this member holds. A
    /// partition whose generation moved on while it was idle was reset by an operator (the
    /// owner is still this member: adopt the new position, dropping buffered records and
    /// seeking) or claimed by another member (give it up, as a fenced batch would). Busy
    /// partitions are left to the fence. Failures are left for the next check.
    func checkForResets() async {
        let held = table.idleClaims()
        guard !held.isEmpty else { return }
        let positions = self.positions
        let partitions = held.keys.sorted()
        let rows: [(TopicPartition, PartitionFence, owner: String?)]
        do {
            rows = try await control.withConnection { db in try positions.claims(of: partitions, on: db) }
        } catch {
            logger.debug("checking for offset resets failed: \(error)")
            return
        }
        for (partition, fence, rowOwner) in rows {
            guard let generation = held[partition], fence.generation != generation else { continue }
            let owned = rowOwner == owner
            guard table.claimChanged(partition, heldUnder: generation, to: fence, owned: owned) else { continue }
            if owned {
                logReset(partition, fence)
                lag.claimed(partition, at: fence.nextOffset)
            } else {
                logTakeover(partition, by: rowOwner)
                lag.forget([partition])
            }
        }
    }

    private func logReset(_ partition: TopicPartition, _ fence: PartitionFence) {
        let position = fence.nextOffset.map(String.init) ?? "earliest"
        logger.notice("\(partition) was reset to \(position) (generation \(fence.generation))")
    }

    private func logTakeover(_ partition: TopicPartition, by other: String?) {
        logger.notice("\(partition) is owned by \(other ?? "nobody") now; waiting for the group to revoke it")
    }
}
