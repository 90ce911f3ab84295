import Foundation
import Testing

@testable import GatewaySessions

/// What only the file-backed store has: persistence, sharing a file, file modes, schema versions.
@Suite struct SQLiteSessionStoreTests {
    let t0 = 1_767_225_600.0

    func session(_ id: String = "s1") -> SessionRecord {
        SessionRecord(
            id: id, subject: "alice", scopes: ["read", "write"], clientID: "portcullis", claims: #"{"role":"admin"}"#, createdAt: t0)
    }

    /// Runs `body` with a path in a fresh temporary directory, removed afterwards.
    func withPath(_ body: (String) async throws -> Void) async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try await body(directory.path + "/sessions.db")
    }

    /// A raw connection to inspect the file behind the store's back.
    func inspect<T>(_ path: String, _ body: (SQLiteConnection) throws -> T) throws -> T {
        let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 5000)
        defer { connection.close() }
        return try body(connection)
    }

    @Test func dataSurvivesCloseAndReopen() async throws {
        try await withPath { path in
            let first = try await SQLiteSessionStore.open(path: path)
            try await first.create(session(), refreshTokenHash: [0])
            var refreshed = session()
            refreshed.lastRefreshedAt = t0 + 10
            #expect(try await first.rotate(oldHash: [0], at: t0 + 10, sealedSuccessor: [5, 5], newHash: [1], session: refreshed))
            try await first.revoke(sessionID: "s1", at: t0 + 20)
            await first.close()

            let second = try await SQLiteSessionStore.open(path: path)
            let old = try #require(try await second.lookup(refreshTokenHash: [0]))
            #expect(old.token.state == .retired(at: t0 + 10, successor: [5, 5]))
            var expected = refreshed
            expected.revokedAt = t0 + 20
            #expect(old.session == expected)
            #expect(try await second.lookup(refreshTokenHash: [1])?.token.state == .active)
            #expect(try await second.revocations(after: 0, limit: 10).map(\.sessionID) == ["s1"])
            await second.close()
        }
    }

    @Test func aSecondInstanceOnTheSameFileSeesWritesAndRotationsStillHappenOnce() async throws {
        try await withPath { path in
            let a = try await SQLiteSessionStore.open(path: path)
            let b = try await SQLiteSessionStore.open(path: path)
            try await a.create(session(), refreshTokenHash: [0])
            #expect(try await b.lookup(refreshTokenHash: [0])?.session == session())
            try await b.create(session("s2"), refreshTokenHash: [200])
            #expect(try await a.lookup(refreshTokenHash: [200])?.session.id == "s2")

            // Two "replicas" race for one token: each connection takes SQLite's file lock in turn.
            let winners = try await SessionStoreConformanceTests.race(20, on: [a, b], oldHash: [0], session: session(), at: t0 + 1)
            #expect(winners.count == 1)
            let winner = try #require(winners.first)
            try await SessionStoreConformanceTests.expectNothingLost(in: a, oldHash: [0], winner: winner, contenders: 20, at: t0 + 1)
            try await SessionStoreConformanceTests.expectNothingLost(in: b, oldHash: [0], winner: winner, contenders: 20, at: t0 + 1)

            // A revocation through one instance stops rotation through the other.
            try await a.revoke(sessionID: "s2", at: t0 + 2)
            #expect(try await b.rotate(oldHash: [200], at: t0 + 3, sealedSuccessor: [1], newHash: [201], session: session("s2")) == false)
            await a.close()
            await b.close()
        }
    }

    @Test func fileAndDirectoriesAreCreatedPrivate() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/data/nested/portcullis.db"
        let store = try await SQLiteSessionStore.open(path: path)
        try await store.ping()
        func mode(_ path: String) throws -> Int {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            return try #require(attributes[.posixPermissions] as? Int) & 0o777
        }
        #expect(try mode(path) == 0o600)
        #expect(try mode(directory.path + "/data/nested") == 0o700)
        #expect(try mode(directory.path + "/data") == 0o700)
        #expect(try mode(directory.path) == 0o700)
        // SQLite gives the WAL the database file's mode.
        #expect(try mode(path + "-wal") == 0o600)
        await store.close()
    }

    @Test func walModeIsOn() async throws {
        try await withPath { path in
            let store = try await SQLiteSessionStore.open(path: path)
            let mode = try inspect(path) { try $0.query("PRAGMA journal_mode") { $0.text(0) } }
            #expect(mode == ["wal"])
            await store.close()
        }
    }

    @Test func migrationIsIdempotent() async throws {
        try await withPath { path in
            for _ in 0..<3 {
                let store = try await SQLiteSessionStore.open(path: path)
                try await store.ping()
                await store.close()
            }
            // Several instances starting at once on a new file: one migrates, the others find it done.
            try await withPath { shared in
                let stores = try await withThrowingTaskGroup(of: SQLiteSessionStore.self) { group in
                    for _ in 0..<4 { group.addTask { try await SQLiteSessionStore.open(path: shared) } }
                    var stores: [SQLiteSessionStore] = []
                    for try await store in group { stores.append(store) }
                    return stores
                }
                for store in stores { await store.close() }
                #expect(try inspect(shared) { try SQLiteSessionStore.userVersion($0) } == SQLiteSessionStore.schemaVersion)
            }
            let tables = try inspect(path) { db in
                try db.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") { $0.text(0) }
            }
            #expect(tables == ["refresh_tokens", "revocations", "sessions", "sqlite_sequence"])
            #expect(try inspect(path) { try SQLiteSessionStore.userVersion($0) } == SQLiteSessionStore.schemaVersion)
        }
    }

    @Test func versionOneRevocationsJoinTheLogOnUpgrade() async throws {
        try await withPath { path in
            // A version-1 file, as the previous release wrote it, with two revoked sessions and a live one.
            try SQLiteSessionStore.createFile(path)
            try inspect(path) { db in
                try db.execute(SQLiteSessionStore.migrations[0])
                try db.execute("PRAGMA user_version = 1")
                for (id, revoked) in [("late", "\(t0 + 9)"), ("live", "NULL"), ("early", "\(t0 + 1)")] {
                    try db.execute(
                        "INSERT INTO sessions VALUES ('\(id)', 'alice', 'read', 'portcullis', '{}', \(t0), \(t0), \(revoked))")
                }
            }
            let store = try await SQLiteSessionStore.open(path: path)
            let log = try await store.revocations(after: 0, limit: 10)
            #expect(log.map(\.sessionID) == ["early", "late"])
            #expect(log.map(\.revokedAt) == [t0 + 1, t0 + 9])
            await store.close()
            // Opening it again migrates nothing twice.
            let again = try await SQLiteSessionStore.open(path: path)
            #expect(try await again.revocations(after: 0, limit: 10) == log)
            await again.close()
        }
    }

    @Test func aNewerSchemaIsRefusedAndLeftAlone() async throws {
        try await withPath { path in
            let store = try await SQLiteSessionStore.open(path: path)
            await store.close()
            try inspect(path) { try $0.execute("PRAGMA user_version = 99") }
            let error = await #expect(throws: SQLiteError.self) { try await SQLiteSessionStore.open(path: path) }
            #expect(error?.code == .schemaTooNew)
            #expect(error?.message.contains(path) == true)
            #expect(error?.message.contains("99") == true)
            #expect(try inspect(path) { try SQLiteSessionStore.userVersion($0) } == 99)
        }
    }

    @Test(arguments: [
        Array(repeating: UInt8(ascii: "x"), count: 4096),
        Array("this is not a database, it is a text file that happens to sit where the store expects one\n".utf8),
        Array("SQLite format 3\0".utf8) + Array(repeating: 0xFF, count: 200),  // right magic, broken header
    ])
    func aFileThatIsNotADatabaseGivesAClearError(contents: [UInt8]) async throws {
        try await withPath { path in
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: path, contents: Data(contents)))
            let error = await #expect(throws: SQLiteError.self) { try await SQLiteSessionStore.open(path: path) }
            #expect(error?.code == .notADatabase)
            #expect(error?.message.contains(path) == true)
            // Untouched.
            #expect(FileManager.default.contents(atPath: path) == Data(contents))
        }
    }

    @Test func aPathThatCannotBeCreatedGivesAClearError() async throws {
        try await withPath { path in
            // A regular file where a parent directory should be.
            let blocker = (path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: blocker, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: blocker + "/file", contents: Data("x".utf8)))
            let error = await #expect(throws: SQLiteError.self) { try await SQLiteSessionStore.open(path: blocker + "/file/sessions.db") }
            #expect(error?.code == .openFailed)
            #expect(error?.message.contains(blocker + "/file") == true)
        }
    }

    @Test func aClosedStoreRefusesCalls() async throws {
        try await withPath { path in
            let store = try await SQLiteSessionStore.open(path: path)
            try await store.ping()
            await store.close()
            await store.close()  // idempotent
            let error = await #expect(throws: SQLiteError.self) { try await store.ping() }
            #expect(error?.code == .closed)
            await #expect(throws: SQLiteError.self) { try await store.lookup(refreshTokenHash: [0]) }
        }
    }

    @Test func duplicateKeysAreRefusedWithoutPartialWrites() async throws {
        try await withPath { path in
            let store = try await SQLiteSessionStore.open(path: path)
            try await store.create(session(), refreshTokenHash: [0])
            // The session is new but its token hash is not: the whole create rolls back.
            let error = await #expect(throws: SQLiteError.self) { try await store.create(session("s2"), refreshTokenHash: [0]) }
            #expect(error?.code == .constraint)
            #expect(try await store.revocations(after: 0, limit: 10).isEmpty)
            try await store.create(session("s2"), refreshTokenHash: [1])  // s2 was not left behind
            // A rotation onto an existing hash fails and leaves the old token active.
            try await store.create(session("s3"), refreshTokenHash: [3])
            await #expect(throws: SQLiteError.self) {
                try await store.rotate(oldHash: [3], at: t0 + 1, sealedSuccessor: [9], newHash: [1], session: session("s3"))
            }
            #expect(try await store.lookup(refreshTokenHash: [3])?.token.state == .active)
            await store.close()
        }
    }

    @Test func aTokenCannotBeRotatedIntoAnotherSession() async throws {
        try await withPath { path in
            let store = try await SQLiteSessionStore.open(path: path)
            try await store.create(session("s1"), refreshTokenHash: [1])
            try await store.create(session("s2"), refreshTokenHash: [2])
            #expect(try await store.rotate(oldHash: [1], at: t0 + 1, sealedSuccessor: [9], newHash: [3], session: session("s2")) == false)
            #expect(try await store.lookup(refreshTokenHash: [1])?.token.state == .active)
            await store.close()
        }
    }

    @Test func refreshTokensAreStoredOnlyAsTheGivenHashes() async throws {
        try await withPath { path in
            let token = RefreshToken.generate()
            let store = try await SQLiteSessionStore.open(path: path)
            try await store.create(session(), refreshTokenHash: RefreshToken.hash(token))
            await store.close()
            let stored = try inspect(path) { try $0.query("SELECT hash FROM refresh_tokens") { $0.blob(0) } }
            #expect(stored == [RefreshToken.hash(token)])
            let file = try #require(FileManager.default.contents(atPath: path))
            #expect(file.range(of: Data(token.utf8)) == nil)
        }
    }

    @Test func purgeCutoffIsExactToTheLastBit() {
        let cases: [(Double, Double)] = [
            (1_767_225_600, 604_800), (1_767_225_600.1, 86_400.3), (0.3, 0.1), (1e9 + 0.7, 1e-3), (100, 0), (5, 10),
        ]
        for (now, lifetime) in cases {
            let x = SQLiteSessionStore.cutoff(now: now, lifetime: lifetime)
            #expect(x + lifetime <= now)
            #expect(x.nextUp + lifetime > now)
        }
        #expect(SQLiteSessionStore.cutoff(now: 100, lifetime: .infinity) == -.infinity)
    }
}
