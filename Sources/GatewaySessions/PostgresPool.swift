import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// A `PostgresClient` (postgres-nio's pool) that the stores share, with what the pool does not give:
///
/// - a task of its own running `PostgresClient.run()`, started at init and cancelled by `close()` (queries hang
///   until `run()` runs, and a second `run()` traps);
/// - a deadline on every call (`connect_timeout_ms`). The pool itself would queue a lease for up to 60 s while the
///   database is down (research §1.2); past the deadline the caller gets `SessionStoreError(.timedOut)` at once,
///   and the connection the call was using is closed, so a query lost in a silent partition does not keep its
///   connection forever;
/// - errors mapped to `SessionStoreError` (outage) or `PostgresStoreError`, with no password in them.
final class PostgresPool: Sendable {
    let settings: PostgresConnectionSettings
    let client: PostgresClient
    let logger: Logger
    private let runTask: Mutex<Task<Void, Never>?>

    init(settings: PostgresConnectionSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let client = PostgresClient(configuration: try settings.clientConfiguration(), backgroundLogger: logger)
        self.client = client
        self.runTask = Mutex(Task { await client.run() })
    }

    /// Cancels the pool's task (which closes its connections) and waits for it to end.
    func close() async {
        let task = runTask.withLock { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
    }

    /// Runs `body` on a leased connection under the deadline. `what` names the operation in errors.
    @discardableResult
    func withConnection<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let lease = LeaseWatch()
        let client = self.client
        let deadline = settings.deadline
        let milliseconds = settings.connectTimeoutMilliseconds
        guard runTask.withLock({ $0 != nil }) else { throw PostgresStoreError(.closed, "\(what): the store is closed") }
        do {
            return try await withThrowingTaskGroup(of: Outcome<T>.self) { group in
                group.addTask {
                    // The pool learns that a connection closed (ours after a deadline, or the server's) a moment
                    // after the close, and may lend it meanwhile: take another one rather than fail the call.
                    for _ in 0..<3 {
                        do {
                            return .value(
                                try await client.withConnection { connection in
                                    guard !connection.isClosed else { throw StaleConnection() }
                                    try lease.begin(connection)
                                    do {
                                        let value = try await body(connection)
                                        lease.end()
                                        return value
                                    } catch {
                                        // The deadline closed this connection, and the query fails before the
                                        // channel is fully closed: wait for that, or the pool lends it again.
                                        if lease.end() { try? await connection.closeFuture.get() }
                                        throw error
                                    }
                                })
                        } catch is StaleConnection {
                            continue
                        }
                    }
                    throw SessionStoreError(.unavailable, "\(what): the pool had only closed connections")
                }
                group.addTask {
                    try await Task.sleep(for: deadline)
                    // Fails whatever the call is doing on its connection right now; a lease still waiting in the
                    // pool's queue is failed by the cancellation below.
                    lease.expire()
                    return .timedOut
                }
                guard let first = try await group.next() else { throw CancellationError() }
                group.cancelAll()
                switch first {
                case .value(let value):
                    return value
                case .timedOut:
                    throw SessionStoreError(.timedOut, "\(what): the database did not answer within \(milliseconds) ms")
                }
            }
        } catch {
            throw PostgresStoreError.map(error, what)
        }
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

    private enum Outcome<T: Sendable>: Sendable {
        case value(T)
        case timedOut
    }
}

/// The connection a deadline-bound call holds, so the timer can close it. `begin`/`end` bracket the call's use of
/// the connection: once the call has ended, a late timer must not close a connection the pool lent to someone else.
private final class LeaseWatch: Sendable {
    private struct State {
        var connection: PostgresConnection?
        var expired = false
    }

    private let state = Mutex(State())

    func begin(_ connection: PostgresConnection) throws {
        let expired = state.withLock { state in
            if !state.expired { state.connection = connection }
            return state.expired
        }
        if expired { throw CancellationError() }
    }

    /// Returns whether the deadline expired (and so closed the connection).
    @discardableResult
    func end() -> Bool {
        state.withLock { state in
            state.connection = nil
            return state.expired
        }
    }

    func expire() {
        let connection = state.withLock { state in
            state.expired = true
            defer { state.connection = nil }
            return state.connection
        }
        connection?.closeWithoutWaiting()
    }
}
