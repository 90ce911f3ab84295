/// The sessions whose access tokens must fail with `token_revoked` (logout, RFC 7009 revocation, refresh-token reuse),
/// each until the last access token it could have issued has expired. One copy per event loop, filled through
/// `EventLoop.execute` by the token service and by revocation-feed followers, so the data path checks it without a
/// lock and without a store round trip.
///
/// Sessions are named by issuer and `sid`: a `sid` is only unique within the issuer that minted it, so a foreign
/// issuer's session can never collide with ours (or another issuer's).
public final class RevokedSessions {
    /// Issuer → session id → when its access tokens have all expired. Keyed by issuer first: there are a handful of
    /// issuers, and the per-request lookup hashes only two short strings.
    private var until: [String: [String: Double]] = [:]
    /// Next time expired entries are dropped, so the set stays as small as the revocations that still matter.
    private var nextPrune = 0.0
    public private(set) var count = 0
    /// Open WebSocket tunnels by issuer and session (DESIGN §10): a revocation ends them at once, since they never
    /// present their token again. Registered and removed by the tunnels, on this loop.
    private var watchers: [String: [String: [ObjectIdentifier: any RevokedSessionWatcher]]] = [:]

    public init() {}

    /// Tells `watcher` when `sessionID` of `issuer` is revoked, until `unwatch`.
    func watch(_ sessionID: String, issuer: String, _ watcher: any RevokedSessionWatcher) {
        watchers[issuer, default: [:]][sessionID, default: [:]][ObjectIdentifier(watcher)] = watcher
    }

    func unwatch(_ sessionID: String, issuer: String, _ watcher: any RevokedSessionWatcher) {
        guard var sessions = watchers[issuer], var set = sessions[sessionID] else { return }
        set.removeValue(forKey: ObjectIdentifier(watcher))
        sessions[sessionID] = set.isEmpty ? nil : set
        watchers[issuer] = sessions.isEmpty ? nil : sessions
    }

    public var isEmpty: Bool { count == 0 }

    /// Marks `sessionID` of `issuer` revoked until `expiry`.
    public func insert(_ sessionID: String, issuer: String, until expiry: Double, now: Double) {
        let previous = until[issuer]?[sessionID]
        if previous == nil { count += 1 }
        until[issuer, default: [:]][sessionID] = max(previous ?? 0, expiry)
        if now >= nextPrune {
            prune(now: now)
            nextPrune = now + 60
        }
        if expiry > now, let tunnels = watchers[issuer]?[sessionID] {
            for watcher in tunnels.values { watcher.sessionRevoked() }
        }
    }

    public func contains(_ sessionID: String, issuer: String, now: Double) -> Bool {
        guard let expiry = until[issuer]?[sessionID] else { return false }
        return expiry > now
    }

    private func prune(now: Double) {
        var remaining = 0
        for (issuer, sessions) in until {
            let kept = sessions.filter { $0.value > now }
            until[issuer] = kept.isEmpty ? nil : kept
            remaining += kept.count
        }
        count = remaining
    }
}

@available(*, unavailable)
extension RevokedSessions: Sendable {}

/// Something that lives as long as a session's token is in use without being presented again (a WebSocket tunnel).
protocol RevokedSessionWatcher: AnyObject {
    /// The session was revoked (called on the loop, from `RevokedSessions.insert`).
    func sessionRevoked()
}
