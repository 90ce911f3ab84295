import Testing
@testable import GatewaySessions

@Suite struct MemorySessionStoreTests {
    let t0 = 1_767_225_600.0

    func session(_ id: String = "s1", at: Double? = nil) -> SessionRecord {
        SessionRecord(id: id, subject: "alice", scopes: ["read"], clientID: "portcullis", createdAt: at ?? t0)
    }

    @Test func twentyConcurrentRotationsOfOneTokenRotateExactlyOnce() async throws {
        let store: any SessionStore = MemorySessionStore()
        try await store.create(session(), refreshTokenHash: [0])
        let wins = await withTaskGroup(of: Bool.self) { group in
            for i in 1...20 {
                group.addTask {
                    (try? await store.rotate(oldHash: [0], at: self.t0 + 1, sealedSuccessor: [UInt8(i)], newHash: [UInt8(i)],
                                             session: self.session())) ?? false
                }
            }
            var wins = 0
            for await won in group where won { wins += 1 }
            return wins
        }
        #expect(wins == 1)
        // The old token is retired with the winner's successor; exactly one new active token exists.
        let old = try #require(try await store.lookup(refreshTokenHash: [0]))
        guard case .retired(_, let successor) = old.token.state else {
            Issue.record("not retired")
            return
        }
        let winner = try #require(try await store.lookup(refreshTokenHash: successor))
        #expect(winner.token.state == .active)
        var active = 0
        for i in 1...20 where try await store.lookup(refreshTokenHash: [UInt8(i)]) != nil { active += 1 }
        #expect(active == 1)
    }

    @Test func revocationStopsRotationAndIsListed() async throws {
        let store: any SessionStore = MemorySessionStore()
        try await store.create(session(), refreshTokenHash: [0])
        try await store.revoke(sessionID: "s1", at: t0 + 5)
        #expect(try await store.rotate(oldHash: [0], at: t0 + 6, sealedSuccessor: [], newHash: [1], session: session()) == false)
        let revoked = try await store.revokedSessions(since: t0)
        #expect(revoked.map(\.id) == ["s1"])
        #expect(try await store.revokedSessions(since: t0 + 6).isEmpty)
        let found = try #require(try await store.lookup(refreshTokenHash: [0]))
        #expect(RefreshDecision.decide(token: found.token, session: found.session, clientID: nil, now: t0 + 6,
                                       policy: RefreshPolicy(absoluteLifetime: 100, idleLifetime: 100, reuseGrace: 10))
                == .invalid(.sessionRevoked))
    }

    @Test func expiredSessionsAreDeletedWithTheirTokens() async throws {
        let store: any SessionStore = MemorySessionStore()
        try await store.create(session("old", at: t0 - 1000), refreshTokenHash: [1])
        try await store.create(session("new", at: t0), refreshTokenHash: [2])
        let policy = RefreshPolicy(absoluteLifetime: 500, idleLifetime: 2000, reuseGrace: 10)
        #expect(try await store.purge(now: t0, policy: policy, revokedBefore: t0 - 100) == 1)
        #expect(try await store.lookup(refreshTokenHash: [1]) == nil)
        #expect(try await store.lookup(refreshTokenHash: [2]) != nil)
    }
}
