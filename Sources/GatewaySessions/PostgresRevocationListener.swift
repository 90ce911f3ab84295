import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Wake-ups for the revocation sync of a replica (DESIGN §9): `LISTEN portcullis_revocations` on a connection of
/// its own (not the pool's: a pooled connection would be handed to queries and its LISTEN would leak or stop),
/// reconnecting forever. The same connection also listens for new signing keys (`portcullis_keys`), so a replica
/// holds one listening connection, not one per channel.
///
/// Notifications can be lost (they are not persisted; a disconnected listener misses them), so they are only
/// wake-ups: the consumer reads the log after the last sequence it applied whenever it gets `.connected` (LISTEN
/// is in force from that moment, so nothing committed afterwards can be missed) or a `.notified` it has not
/// applied yet.
///
/// postgres-nio sets no TCP keepalive, so a silent partition would leave the connection waiting forever: every
/// `heartbeat` a `SELECT 1` runs on the listening connection under the deadline, and a miss counts as a
/// disconnect.
public final class PostgresRevocationListener: Sendable {
    /// What the listener reports, in order.
    public enum Event: Sendable, Hashable {
        /// LISTEN is in force on a new connection (after the first connect and after every reconnect): catch up
        /// from the log now.
        case connected
        /// A revocation-log entry with this sequence number was committed.
        case notified(Int64)
        /// A signing key was added: re-read the keys. (After `.connected`, keys added while disconnected are found
        /// by the keys' periodic read, or by re-reading them then.)
        case keysChanged
        /// The connection was lost or could not be made (reported once per outage, not for every retry).
        case disconnected(SessionStoreError)
    }

    /// The events; finishes after `stop()`.
    public let events: AsyncStream<Event>
    private let task: NIOLockedValueBox<Task<Void, Never>?>

    /// Starts listening at once. `backoff`: the wait after a failure doubles from `initial` up to `maximum`, and
    /// restarts from `initial` after a successful connect.
    public init(
        settings: PostgresConnectionSettings, channel: String = PostgresSessionStore.revocationChannel,
        keysChannel: String = PostgresSigningKeyStore.keysChannel, heartbeat: Duration = .seconds(5),
        backoff: (initial: Duration, maximum: Duration) = (.milliseconds(100), .seconds(5)),
        logger: Logger = silentPostgresLogger
    ) {
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        self.events = events
        let task = Task {
            await Self.run(
                settings: settings, channels: (channel, keysChannel), heartbeat: heartbeat, backoff: backoff,
                continuation: continuation, logger: logger)
            continuation.finish()
        }
        self.task = NIOLockedValueBox(task)
    }

    /// Stops listening (closing the connection) and finishes `events`; returns when the listener has stopped.
    public func stop() async {
        let task = self.task.withLockedValue { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
    }

    deinit {
        task.withLockedValue { $0?.cancel() }
    }

    private static func run(
        settings: PostgresConnectionSettings, channels: (revocations: String, keys: String), heartbeat: Duration,
        backoff: (initial: Duration, maximum: Duration), continuation: AsyncStream<Event>.Continuation, logger: Logger
    ) async {
        var delay = backoff.initial
        var reportedDown = false
        while !Task.isCancelled {
            do {
                let connection = try await PostgresProbe.connect(settings, "listening for revocations", logger: logger)
                // Closing the connection is what ends a `for try await` over notifications, so cancellation (stop)
                // closes it. Whatever ends the attempt, the connection is closed and that is awaited before it is
                // released (postgres-nio asserts that a connection is closed when it is deinitialised).
                var failure: (any Error)?
                do {
                    try await withTaskCancellationHandler {
                        try await connection.listen(on: channels.revocations) { notifications in
                            try await connection.listen(on: channels.keys) { keyNotifications in
                                reportedDown = false
                                delay = backoff.initial
                                continuation.yield(.connected)
                                try await watch(
                                    connection, notifications: notifications, keyNotifications: keyNotifications,
                                    settings: settings, heartbeat: heartbeat, continuation: continuation, logger: logger)
                            }
                        }
                    } onCancel: {
                        connection.closeWithoutWaiting()
                    }
                } catch {
                    failure = error
                }
                try? await connection.close()
                if let failure { throw failure }
            } catch {
                if Task.isCancelled { break }
                if !reportedDown {
                    reportedDown = true
                    let mapped = PostgresStoreError.map(error, "listening for revocations")
                    let down =
                        (mapped as? SessionStoreError)
                        ?? SessionStoreError(.unavailable, "listening for revocations: \(mapped)")
                    logger.warning("revocation listener disconnected: \(down)")
                    continuation.yield(.disconnected(down))
                }
            }
            if Task.isCancelled { break }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, backoff.maximum)
        }
    }

    /// Forwards notifications and runs the heartbeat until one of them fails (the connection is gone or silent).
    private static func watch(
        _ connection: PostgresConnection, notifications: PostgresNotificationSequence,
        keyNotifications: PostgresNotificationSequence, settings: PostgresConnectionSettings, heartbeat: Duration,
        continuation: AsyncStream<Event>.Continuation, logger: Logger
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await notification in notifications {
                    if let sequence = Int64(notification.payload) { continuation.yield(.notified(sequence)) }
                }
                throw SessionStoreError(.unavailable, "listening for revocations: the notification stream ended")
            }
            group.addTask {
                for try await _ in keyNotifications { continuation.yield(.keysChanged) }
                throw SessionStoreError(.unavailable, "listening for signing keys: the notification stream ended")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: heartbeat)
                    _ = try await PostgresProbe.withDeadline(settings, "revocation listener heartbeat", closing: connection) {
                        try await connection.query("SELECT 1", logger: logger)
                        return true
                    }
                }
            }
            // All run until failure; the first failure ends the attempt (the caller closes the connection).
            _ = try await group.next()
            group.cancelAll()
        }
    }
}
