import Foundation
import GatewayTokens
import Testing

@testable import GatewaySessions

@Suite struct PostgresRevocationListenerTests {
    let t0 = 1_767_225_600.0

    /// The next event, or nil when none arrives within `timeout`.
    func next(
        _ iterator: inout AsyncStream<PostgresRevocationListener.Event>.Iterator, within timeout: Duration = .seconds(10)
    ) async -> PostgresRevocationListener.Event? {
        // Note: a timeout cancels the waiting `next()`, which ends an AsyncStream for good; tests only let it time
        // out where they expect the stream to have ended anyway.
        let box = IteratorBox(iterator)
        let event = await withTaskGroup(of: PostgresRevocationListener.Event?.self) { group in
            group.addTask { await box.next() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        iterator = box.iterator
        return event
    }

    @Test func notificationsArriveAfterConnected() async throws {
        let server = try PostgresTestServer.shared()
        let settings = server.settings(database: try await server.createDatabase())
        let store = try await PostgresSessionStore.open(settings)
        let listener = PostgresRevocationListener(settings: settings)
        var events = listener.events.makeAsyncIterator()
        #expect(await next(&events) == .connected)
        for i in 0..<3 {
            try await store.create(
                SessionRecord(id: "s\(i)", subject: "a", scopes: [], clientID: "c", createdAt: t0), refreshTokenHash: [UInt8(i)])
            try await store.revoke(sessionID: "s\(i)", at: t0)
        }
        let log = try await store.revocations(after: 0, limit: 10)
        var seen: [Int64] = []
        while seen.count < 3, let event = await next(&events) {
            if case .notified(let seq) = event { seen.append(seq) }
        }
        #expect(seen == log.map(\.sequence))
        await listener.stop()
        #expect(await next(&events, within: .seconds(2)) == nil)
        await store.close()
    }

    @Test func aNewSigningKeyIsNotifiedOnTheSameConnection() async throws {
        let server = try PostgresTestServer.shared()
        let settings = server.settings(database: try await server.createDatabase())
        let store = try await PostgresSessionStore.open(settings)
        let keys = try store.signingKeys(keyEncryptionKey: Array(repeating: 7, count: 32))
        let listener = PostgresRevocationListener(settings: settings)
        var events = listener.events.makeAsyncIterator()
        #expect(await next(&events) == .connected)
        // The first key (created under the lock, in a transaction) and a later one are both notified at commit.
        _ = try await keys.keysCreatingFirst(algorithm: .ES256, now: t0)
        #expect(await next(&events) == .keysChanged)
        try await keys.add(algorithm: .ES256, now: t0, activationDelay: 60)
        #expect(await next(&events) == .keysChanged)
        // Revocations still arrive beside them.
        try await store.create(SessionRecord(id: "s", subject: "a", scopes: [], clientID: "c", createdAt: t0), refreshTokenHash: [1])
        try await store.revoke(sessionID: "s", at: t0)
        if case .notified = await next(&events) {} else { Issue.record("no revocation notified") }
        await listener.stop()
        await store.close()
    }

    @Test func aServerRestartIsDisconnectedThenConnected() async throws {
        let server = try PostgresTestServer.start()
        defer { server.destroy() }
        let settings = server.settings(database: try await server.createDatabase(), connectTimeoutMilliseconds: 1000)
        let listener = PostgresRevocationListener(settings: settings, heartbeat: .milliseconds(300))
        var events = listener.events.makeAsyncIterator()
        // The first connection may miss the short connect timeout on a loaded machine or in a sanitizer build: the
        // listener retries, reporting each failure, until it is connected.
        var first = await next(&events, within: .seconds(15))
        while case .disconnected = first { first = await next(&events, within: .seconds(15)) }
        #expect(first == .connected)
        server.stop()
        guard case .disconnected(let error) = await next(&events) else {
            Issue.record("no disconnected event")
            return
        }
        #expect(!error.message.contains(server.password))
        try server.launch()
        #expect(await next(&events, within: .seconds(15)) == .connected)
        // It listens again: a revocation made now is notified.
        let store = try await openRetrying(settings)
        try await store.create(SessionRecord(id: "s", subject: "a", scopes: [], clientID: "c", createdAt: t0), refreshTokenHash: [1])
        try await store.revoke(sessionID: "s", at: t0)
        if case .notified = await next(&events) {} else { Issue.record("no notification after the restart") }
        await store.close()
        await listener.stop()
    }

    @Test func stopWhileTheServerIsDownReturns() async throws {
        let server = try PostgresTestServer.start()
        let settings = server.settings(database: "postgres", connectTimeoutMilliseconds: 300)
        server.destroy()
        let listener = PostgresRevocationListener(settings: settings)
        var events = listener.events.makeAsyncIterator()
        if case .disconnected = await next(&events) {} else { Issue.record("expected disconnected") }
        await listener.stop()
        #expect(await next(&events, within: .seconds(2)) == nil)
    }
}

/// Lets a test await an `AsyncStream` iterator from a child task: only one task uses it at a time.
private final class IteratorBox: @unchecked Sendable {
    var iterator: AsyncStream<PostgresRevocationListener.Event>.Iterator
    init(_ iterator: AsyncStream<PostgresRevocationListener.Event>.Iterator) { self.iterator = iterator }
    func next() async -> PostgresRevocationListener.Event? { await iterator.next() }
}
