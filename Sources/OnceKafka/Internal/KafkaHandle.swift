import OnceThreads
import Synchronization

/// One librdkafka instance and the dedicated OS thread that owns it: the ownership model of
/// `KafkaConsumer`, `KafkaProducer` and `KafkaAdmin` alike, each of which holds one.
///
/// Ownership: the handle takes the `RDKafkaClient` it is given and is from then on its only
/// owner. The instance is destroyed exactly once, on the handle's thread: by `close`, or, if
/// `close` never ran, by a last job queued when the handle itself goes away.
///
/// Threading: `run` and `submit` queue jobs to the handle's `BlockingThread`, where they run one
/// at a time in submission order; every blocking librdkafka call (polls, commits, flushes,
/// admin requests, the close and the destroy) is made there, never on Swift's cooperative pool.
/// The one exception is `runOnCallingThread`, for the calls librdkafka documents as
/// thread-safe and non-blocking (enqueueing a record): they run on the caller's thread, under a
/// lock that keeps `close` from tearing the instance down meanwhile. All methods may be called
/// from any thread or task.
///
/// Errors: everything throws `KafkaError` only. Once the instance is torn down, `run` throws
/// kind `.closed` naming `subject`; `runOnCallingThread` does so as soon as `close` has begun.
final class KafkaHandle: @unchecked Sendable {
    // @unchecked Sendable: `client` is read and written only inside jobs of `thread`, except
    // that `runOnCallingThread` reads it while holding `closing` with the flag still false;
    // `close` sets the flag under that lock before its job clears `client`, so those reads
    // happen before the write. `deinit` runs when no job and no caller holds the handle.
    private var client: RDKafkaClient?
    private let closing = Mutex(false)
    private let thread: BlockingThread
    /// What the handle serves, as errors name it ("consumer", "producer", "admin client").
    let subject: String

    /// Takes ownership of `client` and starts the thread named `threadName`.
    init(_ client: sending RDKafkaClient, subject: String, threadName: String) {
        self.client = client
        self.subject = subject
        self.thread = BlockingThread(name: threadName)
    }

    deinit {
        // Never closed: destroy the instance on its own thread all the same. The job holds the
        // last reference; the thread ends once it has run.
        nonisolated(unsafe) var orphan = client
        client = nil
        thread.execute { _ = orphan.take() }
        thread.shutdown()
    }

    /// False once `close` has begun.
    var isOpen: Bool {
        closing.withLock { !$0 }
    }

    /// Runs `body` with the instance on the handle's thread and returns its result. Jobs queued
    /// before `close` still run; later ones throw `.closed`. Cancelling the awaiting task does
    /// not interrupt a job that has started.
    func run<T: Sendable>(
        _ body: @escaping @Sendable (RDKafkaClient) throws(KafkaError) -> T
    ) async throws(KafkaError) -> T {
        let outcome: Result<T, KafkaError>
        do {
            outcome = try await thread.run { [self] () -> Result<T, KafkaError> in
                guard let client else { return .failure(.closed(subject)) }
                return Result { () throws(KafkaError) -> T in try body(client) }
            }
        } catch {
            // Only `BlockingThreadError.shutDown`: the thread ended with `close`.
            throw .closed(subject)
        }
        return try outcome.get()
    }

    /// Queues `body` to the handle's thread and returns at once. The job is skipped once
    /// `close` has begun, so that work which queues itself again (a poll loop) stops there.
    func submit(_ body: @escaping @Sendable (RDKafkaClient) -> Void) {
        thread.execute { [self] in
            guard isOpen, let client else { return }
            body(client)
        }
    }

    /// Runs `body` with the instance on the calling thread. Only for librdkafka calls that are
    /// thread-safe and never block; `body` must not keep the instance.
    func runOnCallingThread<T: Sendable>(
        _ body: (RDKafkaClient) throws(KafkaError) -> T
    ) throws(KafkaError) -> T {
        try closing.withLock { (isClosing: inout Bool) throws(KafkaError) -> T in
            guard !isClosing, let client else { throw .closed(subject) }
            return try body(client)
        }
    }

    /// Runs `teardown` with the instance on its thread, destroys the instance there and ends
    /// the thread. Returns when that is done; a second call does nothing (after waiting for
    /// the first).
    func close(_ teardown: @escaping @Sendable (RDKafkaClient) -> Void = { _ in }) async {
        closing.withLock { $0 = true }
        _ = try? await thread.run { [self] in
            guard let client else { return }
            teardown(client)
            self.client = nil
            // `client` was the last reference: the instance is destroyed as this job ends.
        }
        thread.shutdown()
    }
}
