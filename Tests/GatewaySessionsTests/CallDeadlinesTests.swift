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
        #expect(await eventually { entry.hasExpired })
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
        let later = deadlines.add(after: .milliseconds(600)) {}
        #expect(await eventually { later.hasExpired })
        #expect(!fired.withLockedValue { $0 } && !entry.hasExpired)
    }

    @Test func manyCallsEachExpireOrNot() async {
        let deadlines = CallDeadlines(tick: .milliseconds(10))
        let short = (0..<50).map { _ in deadlines.add(after: .milliseconds(20)) {} }
        let long = (0..<50).map { _ in deadlines.add(after: .seconds(3600)) {} }
        #expect(await eventually { short.allSatisfy { $0.hasExpired } })
        #expect(!long.contains { $0.hasExpired })
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
