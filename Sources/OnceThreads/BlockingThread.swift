import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One operating-system thread that runs submitted jobs one at a time, in submission order.
///
/// Blocking C calls (librdkafka's poll, libpq's round trips) run here so that they never occupy
/// a thread of Swift's cooperative pool. `run` and `execute` may be called from any thread or
/// task; jobs never run concurrently with each other. `shutdown()` lets queued jobs finish,
/// then ends the thread; jobs submitted after it fail with `BlockingThreadError.shutDown`.
/// The running thread keeps this object alive until `shutdown()`: whoever creates one calls it.
public final class BlockingThread: @unchecked Sendable {
    // @unchecked Sendable: `jobs` and `isShutDown` are read and written only while holding
    // `condition`, and `name` is immutable; the thread itself is owned by this object.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var isShutDown = false
    private var hasExited = false
    public let name: String

    /// Starts the thread. `name` identifies it in errors, and (its first 15 bytes, the kernel's
    /// limit) in `top -H`, `ps -L` and profiles; unnamed, it would carry the name of whichever
    /// thread started it.
    public init(name: String) {
        self.name = name
        // The new thread holds a strong reference until `loop` returns after `shutdown()`.
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { context in
            let owner = Unmanaged<BlockingThread>.fromOpaque(context!).takeRetainedValue()
            owner.loop()
            return nil
        }, context)
        precondition(result == 0, "pthread_create failed with \(result)")
        pthread_detach(thread)
    }

    private func loop() {
        Thread.current.name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        while true {
            condition.lock()
            while jobs.isEmpty && !isShutDown {
                condition.wait()
            }
            if jobs.isEmpty && isShutDown {
                hasExited = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Queues `job`; returns at once. Returns false (and drops the job) after `shutdown()`.
    @discardableResult
    public func execute(_ job: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !isShutDown else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// Runs `body` on this thread and returns its result to the awaiting task.
    /// Task cancellation does not interrupt a job that has started.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let queued = execute {
                continuation.resume(with: Result { try body() })
            }
            if !queued {
                continuation.resume(throwing: BlockingThreadError.shutDown(name: name))
            }
        }
    }

    /// Stops accepting jobs, lets the queued ones finish and ends the thread.
    /// With `wait: true` it returns only after the thread has exited; never call it that way
    /// from a job on this same thread.
    public func shutdown(wait: Bool = false) {
        condition.lock()
        isShutDown = true
        condition.broadcast()
        if wait {
            while !hasExited { condition.wait() }
        }
        condition.unlock()
    }
}

/// The error of a job submitted to a `BlockingThread` after its shutdown.
public enum BlockingThreadError: Error, CustomStringConvertible {
    case shutDown(name: String)

    public var description: String {
        switch self {
        case .shutDown(let name): return "thread \(name) is shut down"
        }
    }
}
