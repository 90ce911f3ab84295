import Foundation
import Testing

@testable import GatewaySessions

/// Every `SessionStore` behaves the same: these tests run against each implementation.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case sqlite
    /// A fresh database on the test process's PostgreSQL server (`PostgresTestServer.shared()`).
    case postgres

    var testDescription: String { rawValue }

    /// Runs `body` with a fresh, empty store (SQLite: a file in a new temporary directory), then closes and removes
    /// it.
    func withStore(_ body: (any SessionStore) async throws -> Void) async throws {
        switch self {
        case .memory:
            let store = MemorySessionStore()
            try await body(store)
            await store.close()
        case .sqlite:
            let directory = TemporaryDirectory()
            defer { directory.remove() }
            let store = try await SQLiteSessionStore.open(path: directory.path + "/sessions.db")
            do {
                try await body(store)
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        case .postgres:
            let server = try PostgresTestServer.shared()
            let store = try await PostgresSessionStore.open(server.settings(database: try await server.createDatabase()))
            do {
                try await body(store)
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        }
    }
}

/// A unique directory under the system's temporary directory; not created until something is put in it.
struct TemporaryDirectory: Sendable {
    let path = NSTemporaryDirectory() + "portcullis-store-\(UUID().uuidString)"

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct SessionStoreConformanceTests {
    let t0 = 1_767_225_600.0
    /// Lifetimes no test outlives, so purge removes only what revocation makes purgeable.
    static let longLived = RefreshPolicy(absoluteLifetime: 1e9, idleLifetime: 1e9, reuseGrace: 10)

    func session(_ id: String = "s1", at: Double? = nil) -> SessionRecord {
        SessionRecord(id: id, subject: "alice", scopes: ["read"], clientID: "portcullis", createdAt: at ?? t0)
    }

    @Test(arguments: StoreKind.allCases)
    func createAndLookupRoundTripEveryField(kind: StoreKind) async throws {
        try await kind.withStore { store in
            var full = SessionRecord(
                id: "s-full", subject: "user:ålice", scopes: ["read", "write:all", "admin"], clientID: "spa",
                claims: #"{"email":"a@example.com","groups":["x","y"],"n":1.5,"nul":"a\u0000b"}"#, createdAt: t0 + 0.125)
            full.lastRefreshedAt = t0 + 99.875
            try await store.create(full, refreshTokenHash: Array(repeating: 0xAB, count: 32))
            let found = try #require(try await store.lookup(refreshTokenHash: Array(repeating: 0xAB, count: 32)))
            #expect(found.session == full)
            #expect(found.token == RefreshTokenRecord(hash: Array(repeating: 0xAB, count: 32), sessionID: "s-full"))

            let bare = SessionRecord(id: "s-bare", subject: "", scopes: [], clientID: "portcullis", createdAt: t0)
            try await store.create(bare, refreshTokenHash: [])
            let foundBare = try #require(try await store.lookup(refreshTokenHash: []))
            #expect(foundBare.session == bare)
            #expect(foundBare.session.revokedAt == nil)

            try await store.revoke(sessionID: "s-full", at: t0 + 200.5)
            let revoked = try #require(try await store.lookup(refreshTokenHash: Array(repeating: 0xAB, count: 32)))
            var expected = full
            expected.revokedAt = t0 + 200.5
            #expect(revoked.session == expected)

            #expect(try await store.lookup(refreshTokenHash: [0xAB]) == nil)
            #expect(try await store.lookup(refreshTokenHash: Array(repeating: 0xAB, count: 31)) == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func rotateRetiresTheTokenAndKeepsTheSuccessorReadable(kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.create(session(), refreshTokenHash: [0])
            var refreshed = session()
            refreshed.lastRefreshedAt = t0 + 10
            #expect(try await store.rotate(oldHash: [0], at: t0 + 10, sealedSuccessor: [9, 9, 9], newHash: [1], session: refreshed))

            let old = try #require(try await store.lookup(refreshTokenHash: [0]))
            #expect(old.token.state == .retired(at: t0 + 10, successor: [9, 9, 9]))
            #expect(old.session == refreshed)
            let new = try #require(try await store.lookup(refreshTokenHash: [1]))
            #expect(new.token == RefreshTokenRecord(hash: [1], sessionID: "s1"))
            #expect(new.session.lastRefreshedAt == t0 + 10 && new.session.createdAt == t0)

            // A second rotation of the retired token changes nothing.
            #expect(try await store.rotate(oldHash: [0], at: t0 + 11, sealedSuccessor: [8], newHash: [2], session: refreshed) == false)
            #expect(try await store.lookup(refreshTokenHash: [2]) == nil)
            #expect(try await store.lookup(refreshTokenHash: [0])?.token.state == .retired(at: t0 + 10, successor: [9, 9, 9]))
            // The chain goes on from the successor.
            #expect(try await store.rotate(oldHash: [1], at: t0 + 20, sealedSuccessor: [7], newHash: [2], session: refreshed))
            #expect(try await store.lookup(refreshTokenHash: [2])?.token.state == .active)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func rotateOfAnUnknownTokenFails(kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.create(session(), refreshTokenHash: [0])
            #expect(try await store.rotate(oldHash: [5], at: t0 + 1, sealedSuccessor: [1], newHash: [6], session: session()) == false)
            #expect(try await store.lookup(refreshTokenHash: [6]) == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func revocationStopsRotationAndIsListed(kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.create(session(), refreshTokenHash: [0])
            try await store.revoke(sessionID: "s1", at: t0 + 5)
            #expect(try await store.rotate(oldHash: [0], at: t0 + 6, sealedSuccessor: [], newHash: [1], session: session()) == false)
            #expect(try await store.lookup(refreshTokenHash: [1]) == nil)
            #expect(try await store.revocations(after: 0, limit: 10).map(\.sessionID) == ["s1"])
            let found = try #require(try await store.lookup(refreshTokenHash: [0]))
            #expect(found.token.state == .active)
            #expect(found.session.revokedAt == t0 + 5)
            #expect(
                RefreshDecision.decide(
                    token: found.token, session: found.session, clientID: nil, now: t0 + 6,
                    policy: RefreshPolicy(absoluteLifetime: 100, idleLifetime: 100, reuseGrace: 10))
                    == .invalid(.sessionRevoked))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func revocationLogHasOneEntryPerSessionInOrder(kind: StoreKind) async throws {
        try await kind.withStore { store in
            for id in ["a", "b", "c"] { try await store.create(session(id), refreshTokenHash: Array(id.utf8)) }
            #expect(try await store.revocations(after: 0, limit: 10).isEmpty)
            try await store.revoke(sessionID: "b", at: t0 + 1)
            try await store.revoke(sessionID: "a", at: t0 + 2)
            // A second revocation of a session, and one of an unknown session, append nothing.
            try await store.revoke(sessionID: "b", at: t0 + 3)
            try await store.revoke(sessionID: "nobody", at: t0 + 3)
            try await store.revoke(sessionID: "c", at: t0 + 4)
            let all = try await store.revocations(after: 0, limit: 10)
            #expect(all.map(\.sessionID) == ["b", "a", "c"])
            #expect(all.map(\.revokedAt) == [t0 + 1, t0 + 2, t0 + 4])
            #expect(zip(all, all.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
            #expect(try await store.revocations(after: all[0].sequence, limit: 10) == Array(all[1...]))
            #expect(try await store.revocations(after: 0, limit: 2) == Array(all[..<2]))
            #expect(try await store.revocations(after: all[2].sequence, limit: 10).isEmpty)
            #expect(try await store.revocations(after: 0, limit: 0).isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func purgeDropsOldLogEntriesAndNeverReusesTheirNumbers(kind: StoreKind) async throws {
        try await kind.withStore { store in
            for id in ["a", "b"] { try await store.create(session(id), refreshTokenHash: Array(id.utf8)) }
            try await store.revoke(sessionID: "a", at: t0 + 1)
            try await store.revoke(sessionID: "b", at: t0 + 10)
            let before = try await store.revocations(after: 0, limit: 10)
            _ = try await store.purge(now: t0 + 20, policy: Self.longLived, revokedBefore: t0 + 5)
            #expect(try await store.revocations(after: 0, limit: 10) == [before[1]])
            // A follower that had read everything must see what comes next, even after the newest entry was purged.
            _ = try await store.purge(now: t0 + 30, policy: Self.longLived, revokedBefore: t0 + 15)
            try await store.create(session("c"), refreshTokenHash: Array("c".utf8))
            try await store.revoke(sessionID: "c", at: t0 + 31)
            let next = try await store.revocations(after: before[1].sequence, limit: 10)
            #expect(next.map(\.sessionID) == ["c"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func twentyConcurrentRotationsOfOneTokenRotateExactlyOnce(kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.create(session(), refreshTokenHash: [0])
            let winners = try await Self.race(20, on: [store], oldHash: [0], session: session(), at: t0 + 1)
            #expect(winners.count == 1)
            let winner = try #require(winners.first)
            try await Self.expectNothingLost(in: store, oldHash: [0], winner: winner, contenders: 20, at: t0 + 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func expiredSessionsAreDeletedWithTheirTokens(kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.create(session("old", at: t0 - 1000), refreshTokenHash: [1])
            try await store.create(session("new", at: t0), refreshTokenHash: [2])
            let policy = RefreshPolicy(absoluteLifetime: 500, idleLifetime: 2000, reuseGrace: 10)
            #expect(try await store.purge(now: t0, policy: policy, revokedBefore: t0 - 100) == 1)
            #expect(try await store.lookup(refreshTokenHash: [1]) == nil)
            #expect(try await store.lookup(refreshTokenHash: [2]) != nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func purgeRemovesExactlyThePurgeableSessionsAndForgetsOldSuccessors(kind: StoreKind) async throws {
        try await kind.withStore { store in
            let policy = RefreshPolicy(absoluteLifetime: 500, idleLifetime: 200, reuseGrace: 10)
            let now = t0
            let revokedBefore = now - 30
            var sessions: [SessionRecord] = []
            func add(_ id: String, created: Double, refreshed: Double? = nil, revoked: Double? = nil) {
                var record = session(id, at: created)
                record.lastRefreshedAt = refreshed ?? created
                record.revokedAt = revoked
                sessions.append(record)
            }
            add("absolute", created: now - 1000, refreshed: now - 1)  // past the absolute lifetime, refreshed recently
            add("absolute-edge", created: now - 500, refreshed: now - 1)  // exactly at the end: gone (`<=`)
            add("absolute-inside", created: now - 499.5, refreshed: now - 1)
            add("idle", created: now - 300, refreshed: now - 250)
            add("idle-edge", created: now - 300, refreshed: now - 200)
            add("idle-inside", created: now - 300, refreshed: now - 199.5)
            add("revoked-long-ago", created: now - 100, revoked: now - 40)
            add("revoked-recently", created: now - 100, revoked: now - 20)
            add("revoked-idle", created: now - 300, refreshed: now - 250, revoked: now - 20)  // idle no longer matters
            add("revoked-absolute", created: now - 600, revoked: now - 5)
            add("live", created: now - 10)
            for (index, record) in sessions.enumerated() {
                // Revocation goes through the store's own call (a create with revokedAt set is not a thing callers do).
                var created = record
                created.revokedAt = nil
                try await store.create(created, refreshTokenHash: [UInt8(index)])
                if let revokedAt = record.revokedAt { try await store.revoke(sessionID: record.id, at: revokedAt) }
            }
            // Two rotations on the live session: one retired past the grace, one within it.
            var live = session("live", at: now - 10)
            live.lastRefreshedAt = now - 15
            #expect(
                try await store.rotate(
                    oldHash: [UInt8(sessions.count - 1)], at: now - 15, sealedSuccessor: [1, 1], newHash: [100], session: live))
            live.lastRefreshedAt = now - 5
            #expect(try await store.rotate(oldHash: [100], at: now - 5, sealedSuccessor: [2, 2], newHash: [101], session: live))

            let expected = sessions.filter { $0.isPurgeable(now: now, policy: policy, revokedBefore: revokedBefore) }.map(\.id)
            #expect(Set(expected) == ["absolute", "absolute-edge", "idle", "idle-edge", "revoked-long-ago", "revoked-absolute"])
            #expect(try await store.purge(now: now, policy: policy, revokedBefore: revokedBefore) == expected.count)

            for (index, record) in sessions.enumerated() {
                let found = try await store.lookup(refreshTokenHash: [UInt8(index)])
                #expect((found == nil) == expected.contains(record.id), "\(record.id)")
            }
            // The token retired 15 s ago (grace 10 s) stays retired without its successor; the one retired 5 s ago
            // keeps it; the active one is untouched.
            #expect(
                try await store.lookup(refreshTokenHash: [UInt8(sessions.count - 1)])?.token.state == .retired(at: now - 15, successor: []))
            #expect(try await store.lookup(refreshTokenHash: [100])?.token.state == .retired(at: now - 5, successor: [2, 2]))
            #expect(try await store.lookup(refreshTokenHash: [101])?.token.state == .active)
            // A late replay of the old token is still recognised as reuse.
            let late = try #require(try await store.lookup(refreshTokenHash: [UInt8(sessions.count - 1)]))
            #expect(
                RefreshDecision.decide(token: late.token, session: late.session, clientID: nil, now: now, policy: policy)
                    == .reuseDetected(sessionID: "live"))

            // Nothing left to do: a second purge removes nothing.
            #expect(try await store.purge(now: now, policy: policy, revokedBefore: revokedBefore) == 0)
            // The log keeps every revocation whose access tokens may still be live, a purged session's included.
            let logged = Set(try await store.revocations(after: 0, limit: 20).map(\.sessionID))
            #expect(logged == ["revoked-recently", "revoked-idle", "revoked-absolute"])
        }
    }

    // MARK: - Shared helpers (also used by the SQLite-only tests)

    /// Starts `contenders` concurrent rotations of `oldHash`, spread round-robin over `stores`; contender `i` would
    /// install new hash `[i]` with sealed successor `[100 + i]`. Returns the indexes that won.
    static func race(
        _ contenders: Int, on stores: [any SessionStore], oldHash: [UInt8], session: SessionRecord, at: Double
    ) async throws -> [Int] {
        try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for i in 1...contenders {
                let store = stores[i % stores.count]
                group.addTask {
                    var refreshed = session
                    refreshed.lastRefreshedAt = at
                    let won = try await store.rotate(
                        oldHash: oldHash, at: at, sealedSuccessor: [UInt8(100 + i)], newHash: [UInt8(i)], session: refreshed)
                    return (i, won)
                }
            }
            var winners: [Int] = []
            for try await (i, won) in group where won { winners.append(i) }
            return winners
        }
    }

    /// After a race: every loser sees the old token retired with the winner's successor, the winner's token is the
    /// only new one, and it is active.
    static func expectNothingLost(in store: any SessionStore, oldHash: [UInt8], winner: Int, contenders: Int, at: Double) async throws {
        let old = try #require(try await store.lookup(refreshTokenHash: oldHash))
        #expect(old.token.state == .retired(at: at, successor: [UInt8(100 + winner)]))
        #expect(old.session.lastRefreshedAt == at)
        for i in 1...contenders {
            let found = try await store.lookup(refreshTokenHash: [UInt8(i)])
            if i == winner {
                #expect(found?.token.state == .active)
            } else {
                #expect(found == nil, "loser \(i) left a token")
            }
        }
    }
}
