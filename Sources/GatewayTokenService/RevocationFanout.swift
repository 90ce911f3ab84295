import GatewayControl
import GatewayProxy
import NIOConcurrencyHelpers
import NIOCore

/// Carries revocations to every event loop's `RevokedSessions`: the token service's own at once (before the store
/// write), and those the revocation sync reads from the log. Revocations published before the loops exist are held
/// and applied when they are attached.
final class RevocationFanout: Sendable {
    /// Session id, issuer, until.
    typealias Revocation = (sessionID: String, issuer: String, until: Double)

    private struct State {
        var loops: LoopContexts?
        var held: [Revocation] = []
    }

    private let state = NIOLockedValueBox(State())

    func attach(_ loops: LoopContexts) {
        let held = state.withLockedValue { state in
            state.loops = loops
            defer { state.held = [] }
            return state.held
        }
        if !held.isEmpty { Self.apply(held, to: loops) }
    }

    func publish(_ revocations: [Revocation]) {
        let loops = state.withLockedValue { state in
            if state.loops == nil { state.held.append(contentsOf: revocations) }
            return state.loops
        }
        if let loops, !revocations.isEmpty { Self.apply(revocations, to: loops) }
    }

    /// One task per loop for the whole batch, run on that loop: the data path reads the set without a lock. The
    /// future completes once every loop has it.
    @discardableResult
    static func apply(_ revocations: [Revocation], to loops: LoopContexts) -> EventLoopFuture<Void> {
        let now = WallClock.now()
        return loops.apply { context in
            for revocation in revocations {
                context.revocations.insert(revocation.sessionID, issuer: revocation.issuer, until: revocation.until, now: now)
            }
        }
    }
}
