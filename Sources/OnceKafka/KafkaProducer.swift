import Logging

/// An idempotent Kafka producer (`enable.idempotence=true`, `acks=all`) whose sends can be
/// awaited until the broker acknowledged them.
///
/// Threading: all methods may be called from any task. Enqueueing a record never blocks
/// (librdkafka's produce call is non-blocking and thread-safe, so it runs on the sending task's
/// thread); delivery reports are served, and flushes run, on a thread of the producer's own.
///
/// Ownership: the producer owns its handle through one `KafkaHandle`. Call `close()` to flush,
/// free the handle (on the producer's thread, exactly once) and stop that thread.
///
/// Errors: `KafkaError` throughout; a record's own failure is returned in its `Result`, and
/// once `close` has begun, sends throw kind `.closed`.
public final class KafkaProducer: Sendable {
    private let handle: KafkaHandle

    /// Creates the client and starts serving delivery reports. Throws `KafkaError` with kind
    /// `.configuration` naming a rejected property.
    public init(configuration: KafkaProducerConfiguration, logger: Logger = Logger(label: "once.kafka.producer")) throws {
        let client = try RDKafkaClient.producer(
            properties: configuration.librdkafkaProperties, statisticsHandler: configuration.statisticsHandler, logger: logger)
        handle = KafkaHandle(client, subject: "producer", threadName: "once-kafka-producer")
        Self.serveDeliveryReports(handle)
    }

    /// Serves delivery reports and logs in short slices, so that other jobs (flush, close) can
    /// run on the same thread in between; stops when `close` begins.
    private static func serveDeliveryReports(_ handle: KafkaHandle) {
        handle.submit { client in
            client.serveCallbacks(timeout: .milliseconds(50))
            serveDeliveryReports(handle)
        }
    }

    /// Sends one record and waits for the broker's acknowledgement.
    public func send(_ record: KafkaOutgoingRecord) async throws -> KafkaDeliveryReport {
        try await send([record])[0].get()
    }

    /// Sends the records in order and waits until each one is acknowledged or has failed.
    /// Records for the same partition keep their order. Throws only if the producer is closed.
    public func send(_ records: [KafkaOutgoingRecord]) async throws -> [Result<KafkaDeliveryReport, KafkaError>] {
        guard !records.isEmpty else { return [] }
        guard handle.isOpen else { throw KafkaError.closed("producer") }
        let batch = DeliveryBatch(count: records.count)
        for (index, record) in records.enumerated() {
            while true {
                let refusal: KafkaError?
                do throws(KafkaError) {
                    refusal = try handle.runOnCallingThread { client in
                        client.produce(record, reportingTo: batch, index: index)
                    }
                } catch {
                    refusal = error
                }
                guard let refusal else { break }
                if refusal.kind == .queueFull {
                    // Backoff while the delivery thread drains the local queue; a cancelled
                    // sender stops here, and the record is reported refused (queue full).
                    do {
                        try await Task.sleep(for: .milliseconds(5))
                        continue
                    } catch {}
                }
                batch.complete(index, .failure(refusal))
                break
            }
        }
        return await batch.results()
    }

    /// Waits until every enqueued record is delivered or failed, up to `timeout`.
    public func flush(timeout: Duration = .seconds(30)) async throws {
        try await handle.run { client throws(KafkaError) in try client.flush(timeout: timeout) }
    }

    /// Flushes, frees the handle and stops the delivery thread. Safe to call twice.
    public func close(timeout: Duration = .seconds(30)) async {
        await handle.close { client in try? client.flush(timeout: timeout) }
    }
}
