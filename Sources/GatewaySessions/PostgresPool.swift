import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// A `PostgresClient` (postgres-nio's pool) that the stores share, with what the pool does not give:
///
/// - a task of its own running `PostgresClient.run()`, started at init and cancelled by `close()` (queries hang
///   until `run()` runs, and a second `run()` traps);
/// - a deadline on every call (`connect_timeout_ms`). The pool itself would queue a lease for up to 60 s while the
///   database is down (postgres-nio's pool has no per-lease deadline); past the deadline the caller gets `SessionStoreError(.timedOut)` at once,
///   and the connection the call was using is closed, so a query lost in a silent partition does not keep its
///   connection forever;
/// - errors mapped to `SessionStoreError` (outage) or `PostgresStoreError`, with no password in them;
/// - a quick recovery after a long outage. The pool retries connecting with a backoff that grows to 60 s, and
///   after 60 s without a connection fails every lease at once (its circuit breaker), so once the database is
///   back it could take up to a minute to notice. When a call fails `.unavailable`, a probe connects directly
///   with its own backoff (100 ms → 5 s); as soon as one succeeds, the pool is replaced by a fresh one.
final class PostgresPool: Sendable {
    let settings: PostgresConnectionSettings
    let logger: Logger
    private let state: NIOLockedValueBox<State>
    /// The deadlines of the calls in flight.
    private let deadlines = CallDeadlines()

    private struct State {
        var client: PostgresClient
        var runTask: Task<Void, Never>
        var healing: Task<Void, Never>?
        var closed = false
        /// How many times the pool was replaced (tests).
        var generation = 0
        var lastReplaced: ContinuousClock.Instant?
    }

    /// A pool is replaced at most this often: `.unavailable` from a reachable server (too many connections, an
    /// administrator's kill) must not turn into a reconnect storm.
    static let minimumReplacementInterval = Duration.seconds(10)

    init(settings: PostgresConnectionSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let client = PostgresClient(configuration: try settings.clientConfiguration(), backgroundLogger: logger)
        self.state = NIOLockedValueBox(State(client: client, runTask: Task { await client.run() }))
    }

    /// The pool in use now.
    var client: PostgresClient { state.withLockedValue { $0.client } }

    var generation: Int { state.withLockedValue { $0.generation } }

    /// Cancels the pool's task (which closes its connections) and any recovery, and waits for them to end.
    func close() async {
        let tasks = state.withLockedValue { state -> [Task<Void, Never>] in
            guard !state.closed else { return [] }
            state.closed = true
            return [state.runTask] + (state.healing.map { [$0] } ?? [])
        }
        for task in tasks { task.cancel() }
        // postgres-nio's `run()` returns once its connections are closed, and the recovery once its probe has; a
        // connection stuck in its handshake must not hold a shutdown forever, so the wait is bounded.
        do {
            try await deadlines.run(within: Self.closeWait, timedOut: { CancellationError() }) {
                for task in tasks { await task.value }
            }
        } catch {
            logger.warning("the PostgreSQL pool did not stop within \(Self.closeWait); leaving it behind")
        }
    }

    /// How long `close()` waits for the pool's connections to close.
    static let closeWait = Duration.seconds(10)

    /// Starts the recovery probe unless it runs already (see the type's comment).
    func startHealing() {
        let settings = self.settings
        let logger = self.logger
        state.withLockedValue { state in
            guard !state.closed, state.healing == nil else { return }
            if let last = state.lastReplaced, last.duration(to: .now) < Self.minimumReplacementInterval { return }
            state.healing = Task { [weak self] in
                var delay = Duration.milliseconds(100)
                while !Task.isCancelled {
                    let reachable = (try? await PostgresProbe.withConnection(settings, "probe", logger: logger) { _ in true }) ?? false
                    if reachable {
                        await self?.replaceClient()
                        return
                    }
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                }
            }
        }
    }

    /// Swaps in a fresh pool and stops the old one (its leases fail; their callers get `.unavailable` and retry).
    func replaceClient() async {
        guard let configuration = try? settings.clientConfiguration() else { return }
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let runTask = Task { await client.run() }
        let old = state.withLockedValue { state -> Task<Void, Never>? in
            state.healing = nil
            guard !state.closed else { return runTask }
            defer {
                state.client = client
                state.runTask = runTask
                state.generation += 1
                state.lastReplaced = .now
            }
            return state.runTask
        }
        old?.cancel()
        await old?.value
    }

    /// Runs `body` on a leased connection under the deadline. `what` names the operation in errors.
    @discardableResult
    func withConnection<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let lease = LeaseWatch()
        let settings = self.settings
        guard let client = state.withLockedValue({ $0.closed ? nil : $0.client }) else {
            throw PostgresStoreError(.closed, "\(what): the store is closed")
        }
        do {
            // The call runs in a task of its own, and the caller is answered by whichever comes first: its result or
            // the deadline, even when the call does not heed its cancellation (it is cancelled, so a lease still
            // waiting in the pool's queue fails, and its connection closed; it ends on its own). The deadline is an
            // entry in `deadlines` (one coarse sweep for every call in flight), not a timer per call: a task group
            // with a sleeping second child did this at about twice the cost (a tenth of a gateway's CPU per
            // refresh), and waited for a call that ignored its cancellation.
            return try await deadlines.run(
                within: settings.deadline,
                timedOut: { settings.deadlinePassed(what) },
                onExpiry: { lease.expire() }
            ) {
                try await Self.leaseAndRun(client, lease: lease, what, body)
            }
        } catch {
            let mapped = PostgresStoreError.map(error, what)
            if let failure = mapped as? SessionStoreError, failure.code == .unavailable { startHealing() }
            throw mapped
        }
    }

    /// Leases a connection and runs `body` on it, with `lease` bracketing its use of the connection.
    private static func leaseAndRun<T: Sendable>(
        _ client: PostgresClient, lease: LeaseWatch, _ what: String,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        // The pool learns that a connection closed (ours after a deadline, or the server's) a moment after the
        // close, and may lend it meanwhile: take another one rather than fail the call.
        for _ in 0..<3 {
            do {
                return try await client.withConnection { connection in
                    guard !connection.isClosed else { throw StaleConnection() }
                    try lease.begin(connection)
                    do {
                        let value = try await body(connection)
                        lease.end()
                        return value
                    } catch {
                        // The deadline closed this connection, and the query fails before the channel is fully
                        // closed: wait for that, or the pool lends it again.
                        if lease.end() { try? await connection.closeFuture.get() }
                        throw error
                    }
                }
            } catch is StaleConnection {
                continue
            }
        }
        throw SessionStoreError(.unavailable, "\(what): the pool had only closed connections")
    }

    /// `body` in one transaction (BEGIN … COMMIT, ROLLBACK when it throws), under the deadline.
    @discardableResult
    func transaction<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let logger = self.logger
        return try await withConnection(what) { connection in
            try await connection.query("BEGIN", logger: logger)
            let value: T
            do {
                value = try await body(connection)
            } catch {
                do {
                    try await connection.query("ROLLBACK", logger: logger)
                } catch {
                    // The connection's state is unknown: never hand it to the next caller mid-transaction (and
                    // wait for the close, so the pool cannot lend it meanwhile).
                    try? await connection.close()
                }
                throw error
            }
            try await connection.query("COMMIT", logger: logger)
            return value
        }
    }

    private struct StaleConnection: Error {}
}

/// The connection a deadline-bound call holds, so the timer can close it. `begin`/`end` bracket the call's use of
/// the connection: once the call has ended, a late timer must not close a connection the pool lent to someone else.
private final class LeaseWatch: Sendable {
    private struct State {
        var connection: PostgresConnection?
        var expired = false
    }

    private let state = NIOLockedValueBox(State())

    func begin(_ connection: PostgresConnection) throws {
        let expired = state.withLockedValue { state in
            if !state.expired { state.connection = connection }
            return state.expired
        }
        if expired { throw CancellationError() }
    }

    /// Returns whether the deadline expired (and so closed the connection).
    @discardableResult
    func end() -> Bool {
        state.withLockedValue { state in
            state.connection = nil
            return state.expired
        }
    }

    func expire() {
        let connection = state.withLockedValue { state in
            state.expired = true
            defer { state.connection = nil }
            return state.connection
        }
        connection?.closeWithoutWaiting()
    }
}
