import Foundation
import Testing

@testable import GatewaySessions

/// A micro-benchmark, not a test: off unless PORTCULLIS_BENCH=1, asserts nothing about time, prints rotations per
/// second of the SQLite store (WAL, synchronous=NORMAL) on a temporary file, and of the PostgreSQL store on the test
/// server (fsync off, loopback: compare the two as a ratio, DESIGN §8 "a refresh on PostgreSQL ≥ 0.5× SQLite").
/// Run: PORTCULLIS_BENCH=1 swift test -c release --filter GatewaySessionsTests.SessionStoreBenchmark
@Suite(.enabled(if: ProcessInfo.processInfo.environment["PORTCULLIS_BENCH"] == "1"))
struct SessionStoreBenchmark {
    let t0 = 1_767_225_600.0

    /// Realistic sizes: SHA-256 hashes, a sealed successor pair of about an access token plus a refresh token.
    static func hash(_ chain: Int, _ step: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 32)
        withUnsafeBytes(of: UInt64(chain).bigEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: UInt64(step).bigEndian) { bytes.replaceSubrange(8..<16, with: $0) }
        return bytes
    }

    static let successor = [UInt8](repeating: 0x5A, count: 700)

    /// Rotates chain `chain` (session "c<chain>") `count` times, starting from step `first`.
    static func rotate(_ store: any SessionStore, chain: Int, from first: Int, count: Int, t0: Double) async throws {
        var session = SessionRecord(id: "c\(chain)", subject: "bench", scopes: ["read"], clientID: "portcullis", createdAt: t0)
        for step in first..<(first + count) {
            session.lastRefreshedAt = t0 + Double(step)
            let won = try await store.rotate(
                oldHash: hash(chain, step), at: t0 + Double(step), sealedSuccessor: successor, newHash: hash(chain, step + 1),
                session: session)
            precondition(won, "benchmark chain broke")
        }
    }

    @Test func rotationsPerSecond() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try await SQLiteSessionStore.open(path: directory.path + "/bench.db")
        let tasks = 8
        for chain in 0...tasks {
            try await store.create(
                SessionRecord(id: "c\(chain)", subject: "bench", scopes: ["read"], clientID: "portcullis", createdAt: t0),
                refreshTokenHash: Self.hash(chain, 0))
        }
        // Some unrelated sessions so the indexes are not trivially small.
        for i in 0..<5000 {
            try await store.create(
                SessionRecord(id: "filler\(i)", subject: "bench", scopes: ["read"], clientID: "portcullis", createdAt: t0),
                refreshTokenHash: Self.hash(1000 + i, 0))
        }
        let clock = ContinuousClock()
        func report(_ name: String, _ count: Int, _ elapsed: Duration) {
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(
                "bench SQLiteSessionStore \(name): \(count) rotations in \(String(format: "%.3f", seconds)) s = "
                    + "\(String(format: "%.0f", Double(count) / seconds)) rotations/s (\(String(format: "%.1f", seconds / Double(count) * 1e6)) µs each)"
            )
        }

        try await Self.rotate(store, chain: tasks, from: 0, count: 500, t0: t0)  // warm-up
        let sequential = 10_000
        let start = clock.now
        try await Self.rotate(store, chain: tasks, from: 500, count: sequential, t0: t0)
        report("sequential", sequential, clock.now - start)

        let perTask = 2_500
        let t0 = self.t0
        let concurrentStart = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chain in 0..<tasks {
                group.addTask { try await Self.rotate(store, chain: chain, from: 0, count: perTask, t0: t0) }
            }
            try await group.waitForAll()
        }
        report("\(tasks) concurrent tasks", tasks * perTask, clock.now - concurrentStart)

        // Two instances on one file (two replicas), 4 tasks each, on fresh chains.
        let other = try await SQLiteSessionStore.open(path: directory.path + "/bench.db")
        let sharedStart = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chain in 0..<tasks {
                let target = chain.isMultiple(of: 2) ? store : other
                group.addTask { try await Self.rotate(target, chain: chain, from: perTask, count: perTask, t0: t0) }
            }
            try await group.waitForAll()
        }
        report("\(tasks) tasks over two instances on one file", tasks * perTask, clock.now - sharedStart)
        await other.close()
        await store.close()
    }

    @Test func postgresRotationsPerSecond() async throws {
        let server = try PostgresTestServer.shared()
        let settings = server.settings(database: try await server.createDatabase(), poolSize: 8)
        let store = try await PostgresSessionStore.open(settings)
        let tasks = 8
        for chain in 0...tasks {
            try await store.create(
                SessionRecord(id: "c\(chain)", subject: "bench", scopes: ["read"], clientID: "portcullis", createdAt: t0),
                refreshTokenHash: Self.hash(chain, 0))
        }
        let clock = ContinuousClock()
        func report(_ name: String, _ count: Int, _ elapsed: Duration) {
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(
                "bench PostgresSessionStore \(name): \(count) rotations in \(String(format: "%.3f", seconds)) s = "
                    + "\(String(format: "%.0f", Double(count) / seconds)) rotations/s")
        }
        try await Self.rotate(store, chain: tasks, from: 0, count: 300, t0: t0)  // warm-up
        let sequential = 3_000
        let start = clock.now
        try await Self.rotate(store, chain: tasks, from: 300, count: sequential, t0: t0)
        report("sequential", sequential, clock.now - start)
        let perTask = 1_000
        let t0 = self.t0
        let concurrentStart = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chain in 0..<tasks {
                group.addTask { try await Self.rotate(store, chain: chain, from: 0, count: perTask, t0: t0) }
            }
            try await group.waitForAll()
        }
        report("\(tasks) concurrent tasks", tasks * perTask, clock.now - concurrentStart)
        await store.close()
    }
}
