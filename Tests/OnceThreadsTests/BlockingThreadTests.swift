import Foundation
import Testing

@testable import OnceThreads

@Suite(.timeLimit(.minutes(1)))
struct BlockingThreadTests {
    @Test func jobsRunInOrderOnOneDedicatedThread() async throws {
        let thread = BlockingThread(name: "test-order")
        defer { thread.shutdown() }
        var seen: [Int] = []
        var threads: Set<UInt> = []
        for index in 0..<100 {
            let (value, id) = try await thread.run { (index, UInt(pthread_self())) }
            seen.append(value)
            threads.insert(id)
        }
        #expect(seen == Array(0..<100))
        #expect(threads.count == 1)
        // The cooperative pool's threads are not the dedicated one.
        let poolThread = await Task.detached { UInt(pthread_self()) }.value
        #expect(!threads.contains(poolThread))
    }

    @Test func theThreadCarriesItsNameCutToTheKernelsLimit() async throws {
        let thread = BlockingThread(name: "once-db-session-3")
        defer { thread.shutdown() }
        let comm = try await thread.run { try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8) }
        #expect(comm == "once-db-session\n")
    }

    @Test func errorsReachTheCaller() async throws {
        struct Boom: Error {}
        let thread = BlockingThread(name: "test-errors")
        defer { thread.shutdown() }
        await #expect(throws: Boom.self) { try await thread.run { throw Boom() } }
        #expect(try await thread.run { 7 } == 7)
    }

    @Test func jobsAfterShutdownFail() async throws {
        let thread = BlockingThread(name: "test-shutdown")
        #expect(try await thread.run { 1 } == 1)
        thread.shutdown(wait: true)
        await #expect(throws: BlockingThreadError.self) { try await thread.run { 2 } }
    }

    @Test func confinedResourceIsTornDownOnceAndThenRefused() async throws {
        final class Counter: @unchecked Sendable {  // touched only on the confined thread
            var value = 0
        }
        let teardowns = Counter()
        let confined = try await ThreadConfined(name: "test-confined") { Counter() }
        try await confined.withResource { $0.value += 1 }
        #expect(try await confined.withResource { $0.value } == 1)
        await confined.close { _ in teardowns.value += 1 }
        await confined.close { _ in teardowns.value += 1 }
        #expect(teardowns.value == 1)
        await #expect(throws: (any Error).self) { try await confined.withResource { $0.value } }
    }

    @Test func failingFactoryRethrows() async throws {
        struct NoResource: Error {}
        await #expect(throws: NoResource.self) {
            _ = try await ThreadConfined<Int>(name: "test-failing") { throw NoResource() }
        }
    }
}
