import Dispatch
import NIOConcurrencyHelpers
import Testing

@testable import GatewaySessions

@Suite struct CallDeadlinesTests {
    /// Waits (up to 10 s, far beyond any tick) until `condition` holds.
    private func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<1000 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    @Test func aPassedDeadlineExpiresItsCallOnce() async {
        let deadlines = CallDeadlines(tick: .milliseconds(20))
        let fired = NIOLockedValueBox(0)
        let entry = deadlines.add(after: .milliseconds(30)) { fired.withLockedValue { $0 += 1 } }
        #expect(await eventually { fired.withLockedValue { $0 } > 0 })
        #expect(fired.withLockedValue { $0 } == 1)
        // Expired entries are taken out, and the sweep stops with the last one.
        #expect(deadlines.count == 0)
        deadlines.remove(entry)
        try? await Task.sleep(for: .milliseconds(100))
        #expect(fired.withLockedValue { $0 } == 1)
    }

    @Test func aRemovedEntryNeverExpires() async {
        // Added already past its deadline and removed before the first sweep (a tick of 500 ms): a sweep that missed
        // the removal would run it.
        let deadlines = CallDeadlines(tick: .milliseconds(500))
        let fired = NIOLockedValueBox(false)
        let entry = deadlines.add(after: .zero) { fired.withLockedValue { $0 = true } }
        deadlines.remove(entry)
        // A later entry keeps the sweep going past the removed one's deadline.
        let laterFired = NIOLockedValueBox(false)
        _ = deadlines.add(after: .milliseconds(600)) { laterFired.withLockedValue { $0 = true } }
        #expect(await eventually { laterFired.withLockedValue { $0 } })
        #expect(!fired.withLockedValue { $0 })
    }

    @Test func manyCallsEachExpireOrNot() async {
        let deadlines = CallDeadlines(tick: .milliseconds(10))
        let shortFired = NIOLockedValueBox(0)
        let longFired = NIOLockedValueBox(0)
        for _ in 0..<50 { _ = deadlines.add(after: .milliseconds(20)) { shortFired.withLockedValue { $0 += 1 } } }
        let long = (0..<50).map { _ in deadlines.add(after: .seconds(3600)) { longFired.withLockedValue { $0 += 1 } } }
        #expect(await eventually { shortFired.withLockedValue { $0 } == 50 })
        #expect(longFired.withLockedValue { $0 } == 0)
        for entry in long { deadlines.remove(entry) }
        #expect(deadlines.count == 0)
    }

    struct TimedOut: Error {}

    @Test func runAnswersWithTheResultOrAtTheDeadline() async throws {
        let deadlines = CallDeadlines(tick: .milliseconds(10))
        #expect(try await deadlines.run(within: .seconds(60), timedOut: { TimedOut() }) { 42 } == 42)
        let expired = NIOLockedValueBox(false)
        let started = ContinuousClock.now
        await #expect(throws: TimedOut.self) {
            try await deadlines.run(
                within: .milliseconds(50), timedOut: { TimedOut() }, onExpiry: { expired.withLockedValue { $0 = true } }
            ) {
                // Ten seconds that cancellation cannot cut short: the caller is answered at the deadline anyway.
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    DispatchQueue.global().asyncAfter(deadline: .now() + 10) { continuation.resume() }
                }
            }
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(expired.withLockedValue { $0 })
        #expect(deadlines.count == 0)
    }
}
