import GatewaySessions
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import GatewayTokenService

/// `RevocationSync` over the memory store: catch-up, idempotence, pages, and the feed's long-poll waiters. The
/// waiters' timers run on one real event loop; nothing touches the network.
@Suite struct RevocationSyncTests {
    final class Clock: Sendable {
        let now = NIOLockedValueBox(1_767_225_600.0)
        func read() -> Double { now.withLockedValue { $0 } }
        func advance(_ seconds: Double) { now.withLockedValue { $0 += seconds } }
    }

    /// What the sync applied, in order.
    final class Applied: Sendable {
        let records = NIOLockedValueBox<[RevocationRecord]>([])
        var sessionIDs: [String] { records.withLockedValue { $0.map(\.sessionID) } }
    }

    struct Fixture {
        let store: MemorySessionStore
        let sync: RevocationSync
        let clock: Clock
        let applied: Applied
    }

    static let retention = 930.0

    func fixture(pageSize: Int = 1000, maxWaiters: Int = 10_000) -> Fixture {
        let store = MemorySessionStore()
        let clock = Clock()
        let applied = Applied()
        var settings = RevocationSync.Settings()
        settings.pageSize = pageSize
        settings.maxWaiters = maxWaiters
        let sync = RevocationSync(store: store, retention: Self.retention, settings: settings, clock: { clock.read() })
        sync.setApply { records in applied.records.withLockedValue { $0.append(contentsOf: records) } }
        return Fixture(store: store, sync: sync, clock: clock, applied: applied)
    }

    /// A session created and revoked at the fixture's clock.
    func revoke(_ f: Fixture, _ id: String) async {
        await f.store.create(
            SessionRecord(id: id, subject: "s", scopes: [], clientID: "c", claims: "{}", createdAt: f.clock.read()),
            refreshTokenHash: Array(id.utf8))
        await f.store.revoke(sessionID: id, at: f.clock.read())
    }

    @Test func catchUpAppliesTheLogPageByPageOnce() async throws {
        let f = fixture(pageSize: 2)
        for i in 1...5 { await revoke(f, "s\(i)") }
        #expect(!f.sync.hasCaughtUp)
        try await f.sync.catchUp()
        #expect(f.sync.hasCaughtUp)
        #expect(f.applied.sessionIDs == ["s1", "s2", "s3", "s4", "s5"])
        #expect(f.sync.lastApplied == 5)
        let first = try #require(f.applied.records.withLockedValue { $0.first })
        #expect(first.until == f.clock.read() + Self.retention && first.revokedAt == f.clock.read())
        // Idempotent: nothing new, nothing applied again.
        try await f.sync.catchUp()
        #expect(f.applied.sessionIDs.count == 5)
        await revoke(f, "s6")
        try await f.sync.catchUp()
        #expect(f.applied.sessionIDs == ["s1", "s2", "s3", "s4", "s5", "s6"])
    }

    @Test func entriesWhoseTokensHaveExpiredAreSkippedButPassed() async throws {
        let f = fixture()
        await revoke(f, "old")
        f.clock.advance(Self.retention + 1)
        await revoke(f, "new")
        try await f.sync.catchUp()
        #expect(f.applied.sessionIDs == ["new"])
        #expect(f.sync.lastApplied == 2)
        #expect(f.sync.page(after: 0).revocations.map(\.sessionID) == ["new"])
    }

    @Test func concurrentWakeUpsCoalesceAndEveryCallerSeesWhatWasCommittedBeforeIt() async throws {
        let f = fixture()
        try await f.sync.catchUp()
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<20 {
                group.addTask {
                    await revoke(f, "c\(i)")
                    try? await f.sync.catchUp()
                    // This caller's revocation was committed before its catch-up: it is applied now.
                    #expect(f.applied.sessionIDs.contains("c\(i)"))
                }
            }
        }
        #expect(Set(f.applied.sessionIDs).count == 20 && f.applied.sessionIDs.count == 20)
        #expect(f.sync.lastApplied == 20)
    }

    @Test func theFeedAnswersAtOnceWaitsForNewsAndTimesOut() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let f = fixture()
        // Before the log was read, the feed cannot answer.
        #expect(try await f.sync.page(after: 0, wait: .seconds(1), on: loop).get() == .unavailable)
        await revoke(f, "a")
        try await f.sync.catchUp()
        guard case .page(let first) = try await f.sync.page(after: 0, wait: .seconds(30), on: loop).get() else {
            Issue.record("no page")
            return
        }
        #expect(first.revocations.map(\.sessionID) == ["a"] && first.next == 1 && !first.reset)

        // Nothing after 1: the reader waits, and the next revocation answers it.
        let waiting = f.sync.page(after: 1, wait: .seconds(30), on: loop)
        #expect(f.sync.waiterCount == 1)
        await revoke(f, "b")
        try await f.sync.catchUp()
        guard case .page(let second) = try await waiting.get() else {
            Issue.record("no page")
            return
        }
        #expect(second.revocations.map(\.sessionID) == ["b"] && second.next == 2)
        #expect(f.sync.waiterCount == 0)

        // Nothing arrives: an empty page after `wait`, next unchanged.
        let started = ContinuousClock.now
        let empty = try await f.sync.page(after: 2, wait: .milliseconds(200), on: loop).get()
        #expect(empty == .page(RevocationFeedPage(revocations: [], next: 2)))
        #expect(ContinuousClock.now - started >= .milliseconds(150))
        // wait=0: at once.
        #expect(try await f.sync.page(after: 2, wait: .zero, on: loop).get() == .page(RevocationFeedPage(revocations: [], next: 2)))
    }

    @Test func aReaderAheadOfTheLogIsToldToStartOver() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let f = fixture()
        await revoke(f, "a")
        try await f.sync.catchUp()
        let answer = try await f.sync.page(after: 57, wait: .seconds(30), on: group.next()).get()
        #expect(answer == .page(RevocationFeedPage(revocations: [f.applied.records.withLockedValue { $0[0] }], next: 1, reset: true)))
    }

    @Test func aReaderJustAheadOfThisReplicaIsAnsweredAfterACatchUp() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let f = fixture()
        try await f.sync.catchUp()
        // Another replica wrote entry 1 and a reader already saw it there; this replica has not caught up yet.
        await revoke(f, "a")
        await revoke(f, "b")
        let answer = try await f.sync.page(after: 1, wait: .seconds(30), on: group.next()).get()
        guard case .page(let page) = answer else {
            Issue.record("no page")
            return
        }
        #expect(!page.reset && page.revocations.map(\.sessionID) == ["b"])
    }

    @Test func waitersAreBoundedAndStopAnswersThem() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let f = fixture(maxWaiters: 2)
        try await f.sync.catchUp()
        let one = f.sync.page(after: 0, wait: .seconds(30), on: loop)
        let two = f.sync.page(after: 0, wait: .seconds(30), on: loop)
        #expect(try await f.sync.page(after: 0, wait: .seconds(30), on: loop).get() == .busy)
        f.sync.stop()
        #expect(try await one.get() == .page(RevocationFeedPage(revocations: [], next: 0)))
        #expect(try await two.get() == .page(RevocationFeedPage(revocations: [], next: 0)))
        #expect(try await f.sync.page(after: 0, wait: .seconds(30), on: loop).get() == .unavailable)
    }

    @Test func aWakeUpCatchesUpInTheBackgroundUnlessItsSequenceIsApplied() async throws {
        let f = fixture()
        await revoke(f, "a")
        try await f.sync.catchUp()
        await revoke(f, "b")
        f.sync.wake(upTo: 1)  // already applied: no query
        try await Task.sleep(for: .milliseconds(100))
        #expect(f.applied.sessionIDs == ["a"])
        f.sync.wake(upTo: 2)
        let deadline = ContinuousClock.now + .seconds(5)
        while f.applied.sessionIDs.count < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(f.applied.sessionIDs == ["a", "b"])
    }

    @Test func anExternalSourcesSignalsWakeTheSync() async throws {
        let f = fixture()
        try await f.sync.catchUp()
        let (signals, source) = AsyncStream.makeStream(of: RevocationSync.Signal.self)
        let task = f.sync.consume(signals)
        await revoke(f, "n1")
        source.yield(.appended(sequence: 1))
        await revoke(f, "n2")
        source.yield(.connected)  // a reconnect: whatever was missed is caught up
        let deadline = ContinuousClock.now + .seconds(5)
        while f.applied.sessionIDs.count < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(f.applied.sessionIDs == ["n1", "n2"])
        source.finish()
        await task.value
    }

    @Test func pagesAreBoundedAndFollowNext() async throws {
        var settings = RevocationSync.Settings()
        settings.maxPageEntries = 3
        let store = MemorySessionStore()
        let clock = Clock()
        let sync = RevocationSync(store: store, retention: Self.retention, settings: settings, clock: { clock.read() })
        let f = Fixture(store: store, sync: sync, clock: clock, applied: Applied())
        for i in 1...7 { await revoke(f, "p\(i)") }
        try await sync.catchUp()
        var after: Int64 = 0
        var seen: [String] = []
        while true {
            let page = sync.page(after: after)
            if page.revocations.isEmpty { break }
            #expect(page.revocations.count <= 3)
            seen += page.revocations.map(\.sessionID)
            after = page.next
        }
        #expect(seen == (1...7).map { "p\($0)" })
    }
}
