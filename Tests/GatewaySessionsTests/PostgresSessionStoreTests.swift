import Foundation
import Logging
import PostgresNIO
import Testing

@testable import GatewaySessions

/// What only the PostgreSQL store has to prove: several processes (here: several stores, each with its own pool)
/// on one database, migrations racing, deadlines and outages. The common contract is in the conformance suite.
@Suite struct PostgresSessionStoreTests {
    let t0 = 1_767_225_600.0

    func freshSettings(connectTimeoutMilliseconds: Int = 10_000) async throws -> PostgresConnectionSettings {
        let server = try PostgresTestServer.shared()
        return server.settings(database: try await server.createDatabase(), connectTimeoutMilliseconds: connectTimeoutMilliseconds)
    }

    func session(_ id: String) -> SessionRecord {
        SessionRecord(id: id, subject: "alice", scopes: ["read"], clientID: "portcullis", createdAt: t0)
    }

    @Test func tenReplicasMigratingAtOnceAllOpen() async throws {
        let settings = try await freshSettings()
        let stores = try await withThrowingTaskGroup(of: PostgresSessionStore.self) { group in
            for _ in 0..<10 { group.addTask { try await PostgresSessionStore.open(settings) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(stores.count == 10)
        // Every one of them works on the one schema.
        try await stores[0].create(session("s1"), refreshTokenHash: [1])
        #expect(try await stores[9].lookup(refreshTokenHash: [1])?.session.id == "s1")
        let version = try await PostgresProbe.withConnection(settings, "test", logger: Logger(label: "test")) { connection in
            var versions: [Int] = []
            for try await v in try await connection.query("SELECT version FROM portcullis_schema", logger: Logger(label: "test"))
                .decode(Int.self)
            { versions.append(v) }
            return versions
        }
        #expect(version == [PostgresSessionStore.schemaVersion])
        for store in stores { await store.close() }
    }

    /// A database a version-1 Portcullis made (sessions in it) is taken to version 2: the idle index is gone, the
    /// data stays, and its sessions refresh.
    @Test func migratesAVersion1Database() async throws {
        let settings = try await freshSettings()
        let logger = Logger(label: "test")
        try await PostgresProbe.withConnection(settings, "test", logger: logger) { connection in
            try await connection.query("CREATE TABLE portcullis_schema (version integer NOT NULL)", logger: logger)
            for statement in PostgresSessionStore.migrations[0] {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try await connection.query("INSERT INTO portcullis_schema (version) VALUES (1)", logger: logger)
            // A session and its refresh token as version 1 wrote them.
            try await connection.query(
                """
                INSERT INTO portcullis_sessions (id, subject, scopes, client_id, claims, created_at, last_refreshed_at)
                VALUES ('s1', 'alice', 'read', 'portcullis', '{}', \(t0), \(t0))
                """, logger: logger)
            try await connection.query(
                "INSERT INTO portcullis_refresh_tokens (hash, session_id) VALUES (\(Bytes([1])), 's1')", logger: logger)
        }
        let store = try await PostgresSessionStore.open(settings)
        #expect(try await store.lookup(refreshTokenHash: [1])?.session.subject == "alice")
        var refreshed = session("s1")
        refreshed.lastRefreshedAt = t0 + 1
        #expect(try await store.rotate(oldHash: [1], at: t0 + 1, sealedSuccessor: [], newHash: [2], session: refreshed))
        let (version, idleIndexes) = try await PostgresProbe.withConnection(settings, "test", logger: logger) { connection in
            var version = 0
            for try await v in try await connection.query("SELECT version FROM portcullis_schema", logger: logger).decode(Int.self) {
                version = v
            }
            var indexes = 0
            for try await n in try await connection.query(
                "SELECT count(*)::int FROM pg_indexes WHERE indexname = 'portcullis_sessions_idle'", logger: logger
            ).decode(Int.self) { indexes = n }
            return (version, indexes)
        }
        #expect(version == 2 && PostgresSessionStore.schemaVersion == 2)
        #expect(idleIndexes == 0)
        await store.close()
    }

    @Test func concurrentRotationsOnSeveralReplicasRotateExactlyOnce() async throws {
        let settings = try await freshSettings()
        var stores: [PostgresSessionStore] = []
        for _ in 0..<4 { stores.append(try await PostgresSessionStore.open(settings)) }
        try await stores[0].create(session("s1"), refreshTokenHash: [0xAA])
        for round in 0..<5 {
            let old: [UInt8] = round == 0 ? [0xAA] : [UInt8(round)]
            let replicas = stores
            let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<20 {
                    group.addTask {
                        var refreshed = session("s1")
                        refreshed.lastRefreshedAt = t0 + Double(round + 1)
                        return try await replicas[i % replicas.count].rotate(
                            oldHash: old, at: t0 + Double(round + 1), sealedSuccessor: [UInt8(i)],
                            newHash: [UInt8(round + 1)], session: refreshed)
                    }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(wins == 1, "round \(round)")
            let retired = try #require(try await stores[1].lookup(refreshTokenHash: old))
            guard case .retired(let at, let successor) = retired.token.state else {
                Issue.record("not retired")
                return
            }
            #expect(at == t0 + Double(round + 1) && successor.count == 1)
            #expect(try await stores[2].lookup(refreshTokenHash: [UInt8(round + 1)])?.token.state == .active)
        }
        for store in stores { await store.close() }
    }

    @Test func aRevocationOnOneReplicaStopsRotationOnAnother() async throws {
        let settings = try await freshSettings()
        let a = try await PostgresSessionStore.open(settings)
        let b = try await PostgresSessionStore.open(settings)
        try await a.create(session("s1"), refreshTokenHash: [1])
        try await b.revoke(sessionID: "s1", at: t0 + 1)
        #expect(try await a.rotate(oldHash: [1], at: t0 + 2, sealedSuccessor: [9], newHash: [2], session: session("s1")) == false)
        #expect(try await a.revocations(after: 0, limit: 10).map(\.sessionID) == ["s1"])
        await a.close()
        await b.close()
    }

    @Test func concurrentRevocationsGetDistinctIncreasingSequences() async throws {
        let settings = try await freshSettings()
        var stores: [PostgresSessionStore] = []
        for _ in 0..<3 { stores.append(try await PostgresSessionStore.open(settings)) }
        for i in 0..<30 { try await stores[0].create(session("s\(i)"), refreshTokenHash: [UInt8(i)]) }
        let replicas = stores
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<30 {
                group.addTask { try await replicas[i % 3].revoke(sessionID: "s\(i)", at: t0 + Double(i)) }
                // A second revocation of the same session, racing: still one entry.
                group.addTask { try await replicas[(i + 1) % 3].revoke(sessionID: "s\(i)", at: t0 + Double(i)) }
            }
            try await group.waitForAll()
        }
        let log = try await stores[1].revocations(after: 0, limit: 100)
        #expect(log.count == 30)
        #expect(Set(log.map(\.sessionID)).count == 30)
        #expect(log.map(\.sequence) == log.map(\.sequence).sorted())
        for store in stores { await store.close() }
    }

    @Test func wrongPasswordIsAClearError() async throws {
        var settings = try await freshSettings()
        settings.password = "not-the-password"
        do {
            _ = try await PostgresSessionStore.open(settings)
            Issue.record("opened with a wrong password")
        } catch let error as SessionStoreError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("password authentication failed"), "\(error)")
            #expect(!error.message.contains("not-the-password"))
        }
    }

    @Test func missingDatabaseIsAClearError() async throws {
        let server = try PostgresTestServer.shared()
        do {
            _ = try await PostgresSessionStore.open(server.settings(database: "no_such_database"))
            Issue.record("opened a missing database")
        } catch let error as SessionStoreError {
            #expect(error.code == .unavailable && error.message.contains("does not exist"), "\(error)")
        }
    }

    @Test func nothingListeningIsUnavailable() async throws {
        var settings = try await freshSettings()
        settings.port = try PostgresTestServer.freePort()
        await #expect(throws: SessionStoreError.self) { _ = try await PostgresSessionStore.open(settings) }
    }

    /// A pool with a 300 ms deadline on a fresh database, beside the store that made the database.
    func poolWithShortDeadline() async throws -> (store: PostgresSessionStore, pool: PostgresPool) {
        let store = try await PostgresSessionStore.open(try await freshSettings())
        var short = store.settings
        short.connectTimeoutMilliseconds = 300
        return (store, try PostgresPool(settings: short, logger: silentPostgresLogger))
    }

    /// Runs `body` through `pool`, expects `.timedOut`, and returns how long the caller waited for it.
    func timedOutCall(
        _ pool: PostgresPool, _ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> Void
    ) async -> Duration {
        let started = ContinuousClock.now
        do {
            try await pool.withConnection(what, body)
            Issue.record("no timeout")
        } catch let error as SessionStoreError {
            #expect(error.code == .timedOut)
        } catch {
            Issue.record("\(error)")
        }
        return ContinuousClock.now - started
    }

    @Test func aSlowStatementTimesOutAndThePoolRecovers() async throws {
        let (store, pool) = try await poolWithShortDeadline()
        let waited = await timedOutCall(pool, "sleep") { connection in
            try await connection.query("SELECT pg_sleep(5)", logger: Logger(label: "test"))
        }
        #expect(waited < .seconds(2))
        // The connection the slow statement held was closed; the pool makes a new one (connecting may itself
        // take longer than 300 ms on a loaded machine: a few tries).
        var answered = false
        for _ in 0..<10 where !answered {
            answered =
                (try? await pool.withConnection("after") { connection in
                    _ = try await connection.query("SELECT 1", logger: silentPostgresLogger)
                    return true
                }) ?? false
        }
        #expect(answered)
        await pool.close()
        await store.close()
    }

    /// The deadline answers the caller even when the call does not heed its cancellation (the caller used to wait
    /// for the call to end).
    @Test func theDeadlineAnswersACallThatIgnoresCancellation() async throws {
        let (store, pool) = try await poolWithShortDeadline()
        let waited = await timedOutCall(pool, "stubborn") { _ in
            // Five seconds that cancellation cannot cut short.
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().asyncAfter(deadline: .now() + 5) { continuation.resume() }
            }
        }
        #expect(waited < .seconds(3))
        await pool.close()
        await store.close()
    }

    @Test func serverDownIsAStoreErrorWithinTheDeadlineAndRecovers() async throws {
        let server = try PostgresTestServer.start()
        defer { server.destroy() }
        let settings = server.settings(database: try await server.createDatabase(), connectTimeoutMilliseconds: 500)
        let store = try await openRetrying(settings)
        // Setting up may miss the short deadline on a loaded machine or in a sanitizer build, as opening may.
        for attempt in 1...20 {
            do {
                try await store.create(session("s1"), refreshTokenHash: [1])
                break
            } catch let error as SessionStoreError where error.code == .timedOut && attempt < 20 {
                // The statement may have committed after the deadline answered.
                if (try? await store.lookup(refreshTokenHash: [1])) != nil { break }
            }
        }
        server.stop()
        for _ in 0..<3 {
            let started = ContinuousClock.now
            await #expect(throws: SessionStoreError.self) { _ = try await store.lookup(refreshTokenHash: [1]) }
            #expect(ContinuousClock.now - started < .milliseconds(1500))
        }
        try server.launch()
        var recovered = false
        var lastError: (any Error)?
        for _ in 0..<100 where !recovered {
            do {
                recovered = try await store.lookup(refreshTokenHash: [1])?.session.id == "s1"
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(recovered, "last error: \(String(describing: lastError))")
        await store.close()
    }

    @Test func closedStoreRefusesCalls() async throws {
        let store = try await PostgresSessionStore.open(try await freshSettings())
        await store.close()
        await #expect(throws: PostgresStoreError.self) { try await store.ping() }
    }

    @Test func aPoolThatReportsUnavailableIsReplacedOnceTheDatabaseAnswers() async throws {
        let store = try await PostgresSessionStore.open(try await freshSettings())
        try await store.create(session("s1"), refreshTokenHash: [1])
        #expect(store.pool.generation == 0)
        store.pool.startHealing()
        for _ in 0..<100 where store.pool.generation == 0 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(store.pool.generation == 1)
        #expect(try await store.lookup(refreshTokenHash: [1])?.session.id == "s1")
        // Not again right away.
        store.pool.startHealing()
        try await Task.sleep(for: .milliseconds(300))
        #expect(store.pool.generation == 1)
        await store.close()
    }
}
