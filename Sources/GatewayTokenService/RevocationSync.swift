import GatewaySessions
import NIOConcurrencyHelpers
import NIOCore

/// One revocation as the sync applies it and the feed serves it: a log entry and how long it matters.
struct RevocationRecord: Sendable, Hashable {
    var sequence: Int64
    var sessionID: String
    var revokedAt: Double
    /// When the session's last access token is past `exp` + leeway: `revokedAt` + access TTL + leeway.
    var until: Double
}

/// One answer of the revocation feed (wire format in the README, "Revocations across processes"): the entries after the reader's
/// sequence, `next` to ask after next time, and `reset` when the reader was ahead of this server (a replaced
/// database) and must start over from `next`.
struct RevocationFeedPage: Sendable, Hashable {
    var revocations: [RevocationRecord]
    var next: Int64
    var reset = false
}

/// Keeps this process's data path in step with the store's revocation log (DESIGN §9), whoever wrote the entries:
/// it remembers the last sequence it applied and catches up from there, page by page, applying every entry to every
/// event loop until the session's last access token has expired. Catch-up runs at start, after a local revocation
/// was written, on an external wake-up (the PostgreSQL listener: `wake()`, `reconnected()`), and on a slow poll as
/// a safety net. Rounds are serialised and coalesced: any number of wake-ups while a round is queued join it, and a
/// caller of `catchUp()` returns only after a round that started after its call. Applying is idempotent (sequence
/// numbers only move forward), so a spurious wake-up costs one indexed query.
///
/// It also serves the revocation feed: the entries that still matter are kept in memory in sequence order, so a
/// feed answer never touches the store, and readers with nothing new wait (long poll) on a promise completed by the
/// next round that brings entries — no thread and no polling per waiter.
package final class RevocationSync: Sendable {
    typealias Apply = @Sendable ([RevocationRecord]) -> Void

    struct Settings: Sendable {
        /// Entries read from the store per query.
        var pageSize = 1000
        /// Entries per feed answer.
        var maxPageEntries = 1000
        /// Feed readers waiting at once; beyond, `page` answers `.busy` (503) rather than grow without bound.
        var maxWaiters = 10_000
    }

    /// What the feed answers a reader.
    enum FeedOutcome: Sendable, Hashable {
        case page(RevocationFeedPage)
        /// The log has not been read yet, or a catch-up needed to answer failed: retry shortly.
        case unavailable
        /// Too many readers are waiting.
        case busy
    }

    private struct Waiter {
        var after: Int64
        var promise: EventLoopPromise<FeedOutcome>
        var timeout: Scheduled<Void>?
    }

    private struct State {
        var last: Int64 = 0
        /// A round has completed: `last` reflects the log.
        var caughtUp = false
        var retention: Double
        var apply: Apply?
        /// Entries whose `until` was still ahead when last pruned, in sequence order.
        var window: [RevocationRecord] = []
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiterID: UInt64 = 0
        /// The queued round that has not started yet (callers join it) and the newest round (the next one waits
        /// for it).
        var pending: (id: UInt64, task: Task<Void, any Error>)?
        var tail: Task<Void, any Error>?
        var rounds: UInt64 = 0
        var poll: Task<Void, Never>?
        var stopped = false
    }

    let store: any SessionStore
    let settings: Settings
    private let clock: @Sendable () -> Double
    private let state: NIOLockedValueBox<State>

    /// - Parameter retention: access-token lifetime + leeway: how long after its revocation a session is refused.
    init(store: any SessionStore, retention: Double, settings: Settings = Settings(), clock: @escaping @Sendable () -> Double) {
        self.store = store
        self.settings = settings
        self.clock = clock
        self.state = NIOLockedValueBox(State(retention: retention))
    }

    /// Where entries go (every loop's `RevokedSessions`, the token service's memory of revoked sessions). A reload
    /// sets it again for its new token service; entries applied before are not replayed.
    func setApply(_ apply: @escaping Apply) {
        state.withLockedValue { $0.apply = apply }
    }

    /// A reload may change the access-token lifetime or the leeway; entries read from now on use the new value.
    func setRetention(_ retention: Double) {
        state.withLockedValue { $0.retention = retention }
    }

    /// The last sequence applied.
    var lastApplied: Int64 { state.withLockedValue { $0.last } }

    /// Whether the log has been read at least once.
    var hasCaughtUp: Bool { state.withLockedValue { $0.caughtUp } }

    /// Feed readers waiting now.
    package var waiterCount: Int { state.withLockedValue { $0.waiters.count } }

    // MARK: - Catching up

    /// Reads the log after the last applied sequence until it is exhausted and applies what it finds. Throws what
    /// the store throws (the next round starts where this one stopped).
    func catchUp() async throws {
        let task = state.withLockedValue { state -> Task<Void, any Error> in
            if let pending = state.pending { return pending.task }
            state.rounds += 1
            let id = state.rounds
            let previous = state.tail
            let task = Task<Void, any Error> {
                _ = await previous?.result
                self.state.withLockedValue { state in
                    if state.pending?.id == id { state.pending = nil }
                }
                try await self.round()
            }
            state.pending = (id, task)
            state.tail = task
            return task
        }
        try await task.value
    }

    /// Something may have been appended to the log (an external notification): catch up in the background. With
    /// `sequence` (a notification's payload), nothing is done when it is already applied — every replica is also
    /// notified of its own revocations, which it applied when it wrote them.
    func wake(upTo sequence: Int64? = nil) {
        if let sequence, sequence <= lastApplied { return }
        Task { try? await self.catchUp() }
    }

    /// The external wake-up source reconnected: notifications may have been lost while it was down, so catch up.
    func reconnected() {
        wake()
    }

    /// What an external wake-up source (the PostgreSQL listener) reports.
    enum Signal: Sendable, Hashable {
        /// A notification: an entry was appended, with its sequence when the payload carries one.
        case appended(sequence: Int64?)
        /// The source (re)connected: notifications may have been missed meanwhile.
        case connected
    }

    /// Feeds an external source's signals into catch-ups until the sequence ends or the task is cancelled (the
    /// caller keeps the task). A source that fails ends too; the 5 s poll covers the gap until it is replaced.
    @discardableResult
    func consume<S: AsyncSequence & Sendable>(_ signals: S) -> Task<Void, Never> where S.Element == Signal {
        Task {
            do {
                for try await signal in signals {
                    switch signal {
                    case .appended(let sequence): self.wake(upTo: sequence)
                    case .connected: self.reconnected()
                    }
                }
            } catch {
                // Nothing to do: polling goes on.
            }
        }
    }

    /// Polls the log every `interval` (belt and braces: a lost wake-up is noticed within it); `outcome` hears each
    /// round's result (store health).
    func startPolling(every interval: Duration, outcome: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        state.withLockedValue { state in
            guard state.poll == nil, !state.stopped else { return }
            state.poll = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { break }
                    do {
                        try await self.catchUp()
                        outcome(.success(()))
                    } catch {
                        outcome(.failure(error))
                    }
                }
            }
        }
    }

    /// Stops polling and answers every waiting feed reader with what it has (nothing new).
    package func stop() {
        let (poll, waiters) = state.withLockedValue { state in
            state.stopped = true
            defer {
                state.poll = nil
                state.waiters = [:]
            }
            return (state.poll, Array(state.waiters.values))
        }
        poll?.cancel()
        for waiter in waiters {
            waiter.timeout?.cancel()
            waiter.promise.succeed(.page(RevocationFeedPage(revocations: [], next: waiter.after)))
        }
    }

    private func round() async throws {
        // After `stop` the store may be closed: a late wake-up reads nothing.
        if state.withLockedValue({ $0.stopped }) { return }
        while true {
            let after = state.withLockedValue { $0.last }
            let entries = try await store.revocations(after: after, limit: settings.pageSize)
            if !entries.isEmpty { ingest(entries) }
            if entries.count < settings.pageSize { break }
        }
        let now = clock()
        state.withLockedValue { state in
            state.caughtUp = true
            // Also when nothing arrived: the feed leaves out entries that no longer matter.
            if let first = state.window.first, first.until <= now { state.window.removeAll { $0.until <= now } }
        }
    }

    /// Applies entries read from the log (in sequence order) and wakes the feed readers they are news for.
    private func ingest(_ entries: [RevocationEntry]) {
        let now = clock()
        let (apply, live, woken) = state.withLockedValue { state -> (Apply?, [RevocationRecord], [Waiter]) in
            var live: [RevocationRecord] = []
            for entry in entries where entry.sequence > state.last {
                state.last = entry.sequence
                let record = RevocationRecord(
                    sequence: entry.sequence, sessionID: entry.sessionID, revokedAt: entry.revokedAt,
                    until: entry.revokedAt + state.retention)
                // An entry whose tokens have all expired matters to no one; `last` still moves past it.
                if record.until > now { live.append(record) }
            }
            state.window.removeAll { $0.until <= now }
            state.window.append(contentsOf: live)
            guard !live.isEmpty else { return (state.apply, [], []) }
            // Every waiter asked after a sequence ≤ the previous `last`, so each has news now.
            let woken = Array(state.waiters.values)
            state.waiters = [:]
            return (state.apply, live, woken)
        }
        if !live.isEmpty { apply?(live) }
        var pages: [Int64: RevocationFeedPage] = [:]
        for waiter in woken {
            waiter.timeout?.cancel()
            let page = pages[waiter.after] ?? self.page(after: waiter.after)
            pages[waiter.after] = page
            waiter.promise.succeed(.page(page))
        }
    }

    // MARK: - The feed

    /// The feed's answer for a reader that has applied everything up to `after`: at once when there are entries
    /// after it, else when some arrive or `wait` has passed (an empty page). The future completes on any loop.
    func page(after: Int64, wait: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<FeedOutcome> {
        enum Immediate {
            case answer(FeedOutcome)
            case catchUpFirst
            case waiting(EventLoopFuture<FeedOutcome>)
        }
        let immediate = state.withLockedValue { state -> Immediate in
            guard state.caughtUp, !state.stopped else { return .answer(.unavailable) }
            if after > state.last { return .catchUpFirst }
            let page = Self.page(after: after, in: state.window, limit: settings.maxPageEntries)
            if !page.revocations.isEmpty || wait <= .zero { return .answer(.page(page)) }
            guard state.waiters.count < settings.maxWaiters else { return .answer(.busy) }
            state.nextWaiterID += 1
            let id = state.nextWaiterID
            let promise = loop.makePromise(of: FeedOutcome.self)
            let timeout = loop.scheduleTask(in: wait) { self.expire(id) }
            state.waiters[id] = Waiter(after: after, promise: promise, timeout: timeout)
            return .waiting(promise.futureResult)
        }
        switch immediate {
        case .answer(let outcome):
            return loop.makeSucceededFuture(outcome)
        case .waiting(let future):
            return future
        case .catchUpFirst:
            // The reader is ahead of us: perhaps we are a little behind the log (another replica answered it
            // before), perhaps the database was replaced. Catch up, then decide; never wait on a sequence that may
            // not come.
            let promise = loop.makePromise(of: FeedOutcome.self)
            promise.completeWithTask {
                do {
                    try await self.catchUp()
                } catch {
                    return .unavailable
                }
                let ahead = self.state.withLockedValue { after > $0.last }
                guard ahead else { return try await self.page(after: after, wait: wait, on: loop).get() }
                var page = self.page(after: 0)
                page.reset = true
                return .page(page)
            }
            return promise.futureResult
        }
    }

    /// The entries after `after` that still matter, at most `maxPageEntries`.
    func page(after: Int64) -> RevocationFeedPage {
        state.withLockedValue { Self.page(after: after, in: $0.window, limit: settings.maxPageEntries) }
    }

    private static func page(after: Int64, in window: [RevocationRecord], limit: Int) -> RevocationFeedPage {
        // The window is in sequence order: the first entry after `after` by bisection.
        var low = 0
        var high = window.count
        while low < high {
            let mid = (low + high) / 2
            if window[mid].sequence <= after { low = mid + 1 } else { high = mid }
        }
        let slice = Array(window[low..<min(window.count, low + limit)])
        return RevocationFeedPage(revocations: slice, next: slice.last?.sequence ?? after)
    }

    private func expire(_ id: UInt64) {
        guard let waiter = state.withLockedValue({ $0.waiters.removeValue(forKey: id) }) else { return }
        waiter.promise.succeed(.page(RevocationFeedPage(revocations: [], next: waiter.after)))
    }
}
