/// The sessions whose access tokens must fail with `token_revoked` (logout, RFC 7009 revocation, refresh-token reuse),
/// each until the last access token it could have issued has expired. One copy per event loop, filled by the token
/// service through `EventLoop.execute`, so the data path checks it without a lock and without a store round trip.
public final class RevokedSessions {
    /// Session id → when its access tokens have all expired.
    private var until: [String: Double] = [:]
    /// Next time expired entries are dropped, so the set stays as small as the revocations that still matter.
    private var nextPrune = 0.0

    public init() {}

    public var isEmpty: Bool { until.isEmpty }
    public var count: Int { until.count }

    /// Marks `sessionID` revoked until `expiry`.
    public func insert(_ sessionID: String, until expiry: Double, now: Double) {
        until[sessionID] = max(until[sessionID] ?? 0, expiry)
        if now >= nextPrune {
            until = until.filter { $0.value > now }
            nextPrune = now + 60
        }
    }

    public func contains(_ sessionID: String, now: Double) -> Bool {
        guard let expiry = until[sessionID] else { return false }
        return expiry > now
    }
}

@available(*, unavailable)
extension RevokedSessions: Sendable {}
