import Foundation
import Testing

@testable import GatewaySessions

/// Failed logins counted in the shared database: one count across replicas, the in-process limiter's answers.
@Suite struct PostgresLoginFailureCounterTests {
    func freshSettings() async throws -> PostgresConnectionSettings {
        let server = try PostgresTestServer.shared()
        return server.settings(database: try await server.createDatabase())
    }

    @Test func failuresOnTwoReplicasCountTogether() async throws {
        let settings = try await freshSettings()
        let a = try await PostgresSessionStore.open(settings)
        let b = try await PostgresSessionStore.open(settings)
        let limits = LoginRateLimiter.Limits(perUsername: 3, perAddress: 5, window: 10)
        let ca = a.loginFailureCounter(limits: limits)
        let cb = b.loginFailureCounter(limits: limits)
        try await ca.recordFailure(username: "alice", address: "ip1", now: 0)
        try await cb.recordFailure(username: "alice", address: "ip2", now: 1)
        #expect(try await ca.retryAfter(username: "alice", address: "ip3", now: 2) == nil)
        try await ca.recordFailure(username: "alice", address: "ip3", now: 2)
        // Three failures across two replicas: the username is locked until the oldest leaves the window.
        #expect(try await cb.retryAfter(username: "alice", address: "ip9", now: 3) == 7)
        #expect(try await ca.retryAfter(username: "alice", address: nil, now: 9.5) == 1)
        #expect(try await ca.retryAfter(username: "alice", address: nil, now: 10) == nil)
        #expect(try await cb.retryAfter(username: "bob", address: "ip1", now: 3) == nil)
        // Addresses count across usernames.
        for (i, name) in ["c", "d", "e", "f"].enumerated() {
            try await (i % 2 == 0 ? ca : cb).recordFailure(username: name, address: "ipX", now: 20 + Double(i))
        }
        #expect(try await ca.retryAfter(username: "g", address: "ipX", now: 24) == nil)
        try await cb.recordFailure(username: "h", address: "ipX", now: 24)
        #expect(try await ca.retryAfter(username: "g", address: "ipX", now: 25) == 5)
        // A success clears the username (on every replica), not the address.
        try await ca.recordFailure(username: "z", address: nil, now: 30)
        try await ca.recordFailure(username: "z", address: nil, now: 30)
        try await ca.recordFailure(username: "z", address: nil, now: 30)
        #expect(try await cb.retryAfter(username: "z", address: nil, now: 31) != nil)
        try await cb.recordSuccess(username: "z")
        #expect(try await ca.retryAfter(username: "z", address: nil, now: 31) == nil)
        await a.close()
        await b.close()
    }

    @Test func theCounterAnswersLikeTheInProcessLimiter() async throws {
        let store = try await PostgresSessionStore.open(try await freshSettings())
        let limits = LoginRateLimiter.Limits(perUsername: 2, perAddress: 3, window: 10)
        let shared = store.loginFailureCounter(limits: limits)
        let local = LoginRateLimiter(limits: limits)
        let script: [(String, String?, Double, Bool)] = [
            ("a", "ip", 0, true), ("a", "ip", 4, true), ("a", "other", 5, false), ("a", "other", 10, false),
            ("b", "ip", 5, false), ("c", "ip", 6, true), ("b", "ip", 6, false), ("a", nil, 7, false), ("a", "ip", 7, false),
            ("d", "ip2", 14.5, true), ("a", "ip2", 15, false),
        ]
        for (username, address, now, fail) in script {
            let expected = local.retryAfter(username: username, address: address, now: now)
            #expect(try await shared.retryAfter(username: username, address: address, now: now) == expected, "\(username) \(now)")
            if fail {
                local.recordFailure(username: username, address: address, now: now)
                try await shared.recordFailure(username: username, address: address, now: now)
            }
        }
        await store.close()
    }

    @Test func sessionServiceFailsClosedWhenTheCounterIsDown() async throws {
        let server = try PostgresTestServer.start()
        defer { server.destroy() }
        let settings = server.settings(database: try await server.createDatabase(), connectTimeoutMilliseconds: 300)
        let store = try await PostgresSessionStore.open(settings)
        let counter = store.loginFailureCounter(limits: .init())
        server.stop()
        await #expect(throws: SessionStoreError.self) { _ = try await counter.retryAfter(username: "a", address: nil, now: 0) }
        await #expect(throws: SessionStoreError.self) { try await counter.recordFailure(username: "a", address: nil, now: 0) }
        await store.close()
    }
}
