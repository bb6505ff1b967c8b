import Logging
import OnceBackoff
import OnceKafka
import OncePostgres

/// Runs batches on the database sessions, retrying failures with backoff, except those that
/// retrying cannot mend (`PostgresError.remedy`: a missing privilege, an unmigrated schema),
/// which end the pipeline with that error.
///
/// A dispatch runs in the task that `run` is called from (a child of the pipeline's work
/// group), and so do the dispatches its end frees, so every batch is part of the pipeline's
/// task tree. Cancellation abandons a batch between attempts (nothing of
/// it was written: the fence keeps a later attempt harmless).
struct BatchWorker: Sendable {
    let table: PartitionTable
    let sessions: [PostgresSession]
    let claims: PartitionClaims
    let logger: Logger
    let backoff: Backoff
    let processor: RecordProcessor
    let health: PipelineHealth
    let metrics: PipelineMetrics

    /// Runs `dispatch`, then whatever its end lets start (nothing, once the table drains), in a
    /// loop: a session's dispatches follow one another in this task, and a second dispatch
    /// freed at once runs as a child of it. A chain lasts while its session has work, so there
    /// are never more chains than sessions, and none keeps an ended batch's records.
    func run(_ dispatch: PartitionTable.Dispatch) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            var next = try await process(dispatch)
            while let following = next.popLast() {
                for other in next { group.addTask { try await run(other) } }
                next = try await process(following)
            }
        }
    }

    private func process(_ dispatch: PartitionTable.Dispatch) async throws -> [PartitionTable.Dispatch] {
        let fences = Dictionary(uniqueKeysWithValues: dispatch.parts.map { ($0.batch.partition, $0.fence) })
        let processor = self.processor
        var parts = dispatch.parts.map { part in
            BatchPart(batch: part.batch, records: part.batch.records.map(processor.decoder.decode))
        }
        var attempt = 0
        var ends = [PartitionTable.BatchEnd](repeating: .abandoned, count: parts.count)
        var fencedPartitions: [TopicPartition] = []
        func index(of partition: TopicPartition) -> Int {
            dispatch.parts.firstIndex { $0.batch.partition == partition }!
        }
        while true {
            // Only the partitions this member still holds (a rebalance may take some away).
            parts.removeAll { !table.holds($0.batch.partition, generation: fences[$0.batch.partition]!.generation) }
            guard !parts.isEmpty else { break }
            do {
                let work = parts
                let started = ContinuousClock.now
                health.callStarted(session: dispatch.connection, now: started)
                defer { health.callEnded(session: dispatch.connection) }
                let summary = try await sessions[dispatch.connection].withConnection { db in
                    try processor.commit(work, mode: .consume(fences: fences), on: db)
                }
                metrics.committed(summary, records: parts.reduce(0) { $0 + $1.records.count }, duration: .now - started)
                for letter in summary.deadLetters {
                    logger.notice("dead-lettered (\(letter.reason.rawValue)): \(letter.message)", metadata: letter.logMetadata)
                }
                for part in parts {
                    ends[index(of: part.batch.partition)] = .committed(nextOffset: part.batch.nextOffset)
                    metrics.lag.committed(part.batch.partition, at: part.batch.nextOffset)
                    logger.debug(
                        "batch committed",
                        metadata: [
                            "once.partition": "\(part.batch.partition)", "once.records": "\(part.batch.records.count)",
                            "once.next_offset": "\(part.batch.nextOffset)",
                        ])
                }
                break
            } catch let fenced as BatchFenced {
                // Nothing was written: that partition re-reads its position, the others go again.
                logger.notice("\(fenced); re-reading its position")
                metrics.fencedBatch()
                ends[index(of: fenced.partition)] = .fenced
                fencedPartitions.append(fenced.partition)
                parts.removeAll { $0.batch.partition == fenced.partition }
            } catch let failure as PostgresError where failure.remedy != nil {
                let names = parts.map { "\($0.batch.partition)" }.joined(separator: ", ")
                logger.critical(
                    "batch on \(names) cannot succeed, stopping: \(failure)",
                    metadata: Logger.Metadata.failure(failure).merging(["once.partitions": "\(names)"]) { $1 })
                _ = table.finished(dispatch, ends)
                throw failure
            } catch {
                attempt += 1
                if attempt == 1 { for part in parts { table.retrying(part.batch.partition) } }
                let delay = backoff.delay(attempt: attempt)
                let transient = (error as? PostgresError)?.isTransient == true
                metrics.retried(transient: transient)
                let level: Logger.Level = transient ? .warning : .error
                let names = parts.map { "\($0.batch.partition)" }.joined(separator: ", ")
                logger.log(
                    level: level, "batch on \(names) failed (attempt \(attempt)), retrying in \(delay): \(error)",
                    metadata: Logger.Metadata.failure(error).merging(["once.partitions": "\(names)", "once.attempt": "\(attempt)"]) { $1 })
                do {
                    try await Task.sleep(for: delay)
                } catch {
                    break  // cancelled: abandoned, as the ends say
                }
            }
        }
        let next = table.finished(dispatch, ends)
        for partition in fencedPartitions { try await claims.reload(partition) }
        return next
    }
}
