/// A value that lives on one `BlockingThread` and is touched nowhere else.
///
/// Use it for C handles that block and are not thread-safe (a libpq connection, a librdkafka
/// consumer): the resource is created on the thread, every access is a job on that thread, and
/// `close` runs the resource's teardown there exactly once. All methods may be called from any
/// task; accesses are serialised in submission order.
public final class ThreadConfined<Resource>: @unchecked Sendable {
    // @unchecked Sendable: `resource` is read and written only inside jobs of `thread`, which
    // run one at a time on a single OS thread; no other code path touches it.
    private var resource: Resource?
    public let thread: BlockingThread

    /// Creates the resource on a new thread named `name`; if `make` throws, the thread ends and
    /// the error is rethrown.
    public init(name: String, make: @escaping @Sendable () throws -> Resource) async throws {
        thread = BlockingThread(name: name)
        do {
            try await thread.run { self.resource = try make() }
        } catch {
            thread.shutdown()
            throw error
        }
    }

    /// Runs `body` with the resource on its thread.
    public func withResource<T: Sendable>(_ body: @escaping @Sendable (Resource) throws -> T) async throws -> T {
        try await thread.run {
            guard let resource = self.resource else { throw ThreadConfinedError.closed(name: self.thread.name) }
            return try body(resource)
        }
    }

    /// Runs `teardown` with the resource on its thread, drops it and ends the thread.
    /// Later calls to `withResource` throw `ThreadConfinedError.closed`; a second `close` does nothing.
    public func close(_ teardown: @escaping @Sendable (Resource) -> Void = { _ in }) async {
        _ = try? await thread.run {
            if let resource = self.resource {
                self.resource = nil
                teardown(resource)
            }
        }
        thread.shutdown()
    }
}

/// The error of an access to a `ThreadConfined` value after `close`.
public enum ThreadConfinedError: Error, CustomStringConvertible {
    case closed(name: String)

    public var description: String {
        switch self {
        case .closed(let name): return "\(name) is closed"
        }
    }
}
