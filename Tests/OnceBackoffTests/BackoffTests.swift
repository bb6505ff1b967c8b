import OnceBackoff
import Testing

@Suite struct BackoffTests {
    @Test func delaysGrowAndStayUnderTheCap() {
        let backoff = Backoff(base: .milliseconds(10), cap: .milliseconds(200))
        for attempt in 0..<30 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay <= .milliseconds(200))
            #expect(delay >= .milliseconds(1))
        }
        #expect(backoff.delay(attempt: 10) >= .milliseconds(100))
    }
}
