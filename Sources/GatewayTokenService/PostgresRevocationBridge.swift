import GatewayConfig
import GatewaySessions
import Logging
import NIOConcurrencyHelpers

/// Connects a replica on a PostgreSQL store to the fleet's revocations (DESIGN §9): a `PostgresRevocationListener`
/// on the store's settings, whose wake-ups feed `RevocationSync.consume` — `.connected` (LISTEN is in force again,
/// notifications may have been missed meanwhile) catches up from the last applied sequence, `.notified(seq)` catches
/// up to that entry — so another replica's revocation reaches this data path within a notification's round trip, and
/// one missed while disconnected right after reconnecting. Its up/down state feeds `StoreHealth` (the listener is
/// the first to notice a lost database: its connection drops at once, while the pool only notices at a query).
///
/// The listener also reports new signing keys (`.keysChanged`), and after a reconnect keys may have been added
/// unheard: both call `keysChanged` (the fleet's keys re-read them).
///
/// Started once the revocation sync applies to the loops (an entry read before would be skipped for them); a reload
/// keeps it, re-pointing only the health it reports to and the keys it wakes.
final class PostgresRevocationBridge: Sendable {
    private struct State {
        var listener: PostgresRevocationListener?
        var health: StoreHealth?
        var keysChanged: (@Sendable () -> Void)?
        var task: Task<Void, Never>?
        var consumer: Task<Void, Never>?
        var stopped = false
    }

    private let settings: PostgresConnectionSettings
    private let sync: RevocationSync
    private let state = NIOLockedValueBox(State())

    init(store: PostgresSessionStore, sync: RevocationSync) {
        self.settings = store.settings
        self.sync = sync
    }

    /// Starts listening (the first call) and reports the listener's state to `health`, and new signing keys to
    /// `keysChanged`, from now on.
    func start(health: StoreHealth, keysChanged: @escaping @Sendable () -> Void) {
        state.withLockedValue { state in
            state.health = health
            state.keysChanged = keysChanged
            guard state.listener == nil, !state.stopped else { return }
            let listener = PostgresRevocationListener(settings: settings)
            let (signals, continuation) = AsyncStream.makeStream(of: RevocationSync.Signal.self)
            state.listener = listener
            state.consumer = sync.consume(signals)
            state.task = Task {
                for await event in listener.events {
                    switch event {
                    case .connected:
                        let (health, keysChanged) = self.state.withLockedValue { ($0.health, $0.keysChanged) }
                        health?.answered()
                        continuation.yield(.connected)
                        keysChanged?()
                    case .notified(let sequence):
                        continuation.yield(.appended(sequence: sequence))
                    case .keysChanged:
                        self.state.withLockedValue { $0.keysChanged }?()
                    case .disconnected(let error):
                        // Known revocations stay in force; the sync's poll and the reconnect's catch-up cover the gap.
                        self.state.withLockedValue { $0.health }?.failed(error)
                    }
                }
                continuation.finish()
            }
        }
    }

    /// Stops the listener (closing its connection) and waits until it has stopped; the store can be closed after.
    func stop() async {
        let (listener, task, consumer) = state.withLockedValue { state in
            state.stopped = true
            defer {
                state.listener = nil
                state.task = nil
                state.consumer = nil
            }
            return (state.listener, state.task, state.consumer)
        }
        await listener?.stop()
        await task?.value
        await consumer?.value
    }
}

extension SessionStores {
    /// Where failed logins are counted: in the shared database for a PostgreSQL store (so a fleet allows the same
    /// number of guesses as one process), else in this process.
    static func loginFailureCounter(_ store: any SessionStore, limits: LoginRateLimiter.Limits) -> any LoginFailureCounter {
        if let postgres = store as? PostgresSessionStore { return postgres.loginFailureCounter(limits: limits) }
        return LoginRateLimiter(limits: limits)
    }
}
