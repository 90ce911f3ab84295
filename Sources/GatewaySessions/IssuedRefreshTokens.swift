import NIOConcurrencyHelpers

/// The sessions of the refresh tokens this process handed out last, by token hash: what a refresh needs to decide
/// (`RefreshDecision.decide`) without reading the store first.
///
/// A client mostly brings its refresh token back to the replica that issued it; then the refresh is the rotation
/// alone, one statement instead of a lookup and a rotation (DESIGN §9: each statement costs the gateway and the
/// database more than the rest of a refresh). Nothing here is authoritative: the store's rotation is conditional on
/// the token still being active and the session not revoked, and when it refuses, the refresh takes the usual way
/// (lookup, then replay, reuse detection or an error). An entry is taken out when it is used, so concurrent
/// refreshes of one token use it at most once.
///
/// Bounded: past `capacity` entries an arbitrary one makes room (a token whose entry is gone is refreshed the usual
/// way). Only a successful login or rotation adds an entry.
final class IssuedRefreshTokens: Sendable {
    private let entries = NIOLockedValueBox<[[UInt8]: SessionRecord]>([:])
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    func remember(_ tokenHash: [UInt8], session: SessionRecord) {
        guard capacity > 0 else { return }
        entries.withLockedValue { entries in
            if entries.count >= capacity, entries[tokenHash] == nil { entries.remove(at: entries.startIndex) }
            entries[tokenHash] = session
        }
    }

    /// The entry for `tokenHash`, removed.
    func take(_ tokenHash: [UInt8]) -> SessionRecord? {
        entries.withLockedValue { $0.removeValue(forKey: tokenHash) }
    }

    var count: Int { entries.withLockedValue { $0.count } }
}
