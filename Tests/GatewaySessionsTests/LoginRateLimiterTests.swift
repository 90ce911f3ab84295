import Testing

@testable import GatewaySessions

@Suite struct LoginRateLimiterTests {
    @Test func slidingWindowPerUsernameAndPerAddress() {
        let limiter = LoginRateLimiter(limits: .init(perUsername: 2, perAddress: 3, window: 10))
        #expect(limiter.retryAfter(username: "a", address: "ip", now: 0) == nil)
        limiter.recordFailure(username: "a", address: "ip", now: 0)
        limiter.recordFailure(username: "a", address: "ip", now: 4)
        // The oldest failure leaves the window at 10.
        #expect(limiter.retryAfter(username: "a", address: "other", now: 5) == 5)
        #expect(limiter.retryAfter(username: "a", address: "other", now: 10) == nil)
        #expect(limiter.retryAfter(username: "b", address: "ip", now: 5) == nil)
        limiter.recordFailure(username: "c", address: "ip", now: 6)
        #expect(limiter.retryAfter(username: "b", address: "ip", now: 6) == 4)
        // A success clears the username's count, not the address's.
        limiter.recordSuccess(username: "a")
        #expect(limiter.retryAfter(username: "a", address: nil, now: 7) == nil)
        #expect(limiter.retryAfter(username: "a", address: "ip", now: 7) == 3)
    }

    @Test func memoryStaysBoundedUnderASprayOfUsernames() {
        let limiter = LoginRateLimiter(limits: .init(perUsername: 1, perAddress: 1_000_000, window: 60), maxKeys: 100)
        for i in 0..<10_000 { limiter.recordFailure(username: "u\(i)", address: nil, now: Double(i) / 1000) }
        #expect(limiter.keyCount <= 100)
        // The most recent failures are the ones kept.
        #expect(limiter.retryAfter(username: "u9999", address: nil, now: 10) != nil)
    }
}
