import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import Synchronization

/// One connection of its own, outside the pool, under the deadline: what `PostgresSessionStore.open` migrates on
/// (so a wrong password is reported as the server's answer, not as a pool timeout) and what the revocation
/// listener connects with.
enum PostgresProbe {
    /// Connects within the deadline. Errors as `PostgresStoreError.map`.
    static func connect(_ settings: PostgresConnectionSettings, _ what: String, logger: Logger) async throws -> PostgresConnection {
        let configuration = try settings.connectionConfiguration()
        // The connect attempt is cancelled when the deadline passes (postgres-nio closes a half-made connection).
        // A connection that completes just as the deadline passes is closed here: nobody will use it, and
        // postgres-nio wants every connection closed before it is released.
        let late = LateConnection()
        return try await withDeadline(settings, what, onTimeout: { late.expire() }) {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: nextID(), logger: logger)
            guard late.deliver(connection) else {
                try? await connection.close()
                throw CancellationError()
            }
            return connection
        }
    }

    /// Connects (under the deadline), runs `body` under `bodyDeadline` (default: the deadline), closes.
    static func withConnection<T: Sendable>(
        _ settings: PostgresConnectionSettings, _ what: String, bodyDeadline: Duration? = nil, logger: Logger,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await connect(settings, what, logger: logger)
        var bodySettings = settings
        if let bodyDeadline {
            bodySettings.connectTimeoutMilliseconds =
                Int(bodyDeadline.components.seconds * 1000)
                + Int(bodyDeadline.components.attoseconds / 1_000_000_000_000_000)
        }
        do {
            let value = try await withDeadline(bodySettings, what, closing: connection) { try await body(connection) }
            try? await connection.close()
            return value
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// `body` or `SessionStoreError(.timedOut)` after the deadline, whichever comes first. When the deadline wins,
    /// `closing` is closed, which fails whatever `body` waits for on it, and a connection attempt is cancelled; the
    /// caller is answered at once either way, even while `body` has not noticed yet (a connect that ignores its
    /// cancellation used to hold the caller, and with it a pool's recovery and `close()`).
    static func withDeadline<T: Sendable>(
        _ settings: PostgresConnectionSettings, _ what: String, closing connection: PostgresConnection? = nil,
        onTimeout: @escaping @Sendable () -> Void = {}, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        do {
            return try await deadlines.run(
                within: settings.deadline,
                timedOut: { settings.deadlinePassed(what) },
                onExpiry: {
                    connection?.closeWithoutWaiting()
                    onTimeout()
                },
                body)
        } catch {
            throw PostgresStoreError.map(error, what)
        }
    }

    /// The deadlines of the probes in flight (connects, the listener's heartbeats).
    private static let deadlines = CallDeadlines()

    private static let counter = Atomic<Int>(1_000_000)

    /// Connection ids for postgres-nio's logs (the pool numbers its own from 0).
    static func nextID() -> Int {
        counter.add(1, ordering: .relaxed).newValue
    }
}

/// A connection made by `connect`, and whether its deadline passed first: exactly one side ends up closing a
/// connection that arrives too late.
private final class LateConnection: Sendable {
    private struct State {
        var connection: PostgresConnection?
        var expired = false
    }

    private let state = NIOLockedValueBox(State())

    /// false when the deadline passed already: the caller closes the connection.
    func deliver(_ connection: PostgresConnection) -> Bool {
        state.withLockedValue { state in
            if !state.expired { state.connection = connection }
            return !state.expired
        }
    }

    /// Closes a connection delivered but no longer wanted.
    func expire() {
        let connection = state.withLockedValue { state -> PostgresConnection? in
            state.expired = true
            return state.connection
        }
        connection?.closeWithoutWaiting()
    }
}

extension PostgresConnection {
    /// Starts closing the connection without waiting for it (from synchronous code and cancellation handlers):
    /// whatever waits on it fails at once.
    func closeWithoutWaiting() {
        let _: EventLoopFuture<Void> = close()
    }
}

/// The default logger of the PostgreSQL types (`PostgresSessionStore.open`, `PostgresRevocationListener`): none. postgres-nio reports every failed reconnect at info level;
/// the runtime passes its own logger when it wants them.
public let silentPostgresLogger = Logger(label: "portcullis.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
