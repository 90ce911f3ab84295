/// Where sessions and refresh tokens live (DESIGN §4 `store`). Refresh tokens are kept only as hashes. Every
/// method is atomic on its own; `rotate` is the one conditional update that makes concurrent refreshes of one token
/// rotate exactly once.
public protocol SessionStore: Sendable {
    /// A new login: the session and its first refresh token.
    func create(_ session: SessionRecord, refreshTokenHash: [UInt8]) async throws

    /// The token record and its session, or nil when the hash is unknown.
    func lookup(refreshTokenHash: [UInt8]) async throws -> (token: RefreshTokenRecord, session: SessionRecord)?

    /// If the token `oldHash` is still active: retire it at `at` with `sealedSuccessor`, add `newHash` as the
    /// session's active token and store `session` (its restarted idle clock). Returns false, changing nothing, when
    /// the token was no longer active — another refresh won the race.
    func rotate(oldHash: [UInt8], at: Double, sealedSuccessor: [UInt8], newHash: [UInt8], session: SessionRecord) async throws -> Bool

    /// Revokes the session and so every refresh token of it (logout, RFC 7009 revoke, reuse detection), and appends
    /// it to the revocation log in the same transaction. Revoking an already revoked session changes nothing: the
    /// first revocation's time stands and the log gets one entry per session.
    func revoke(sessionID: String, at: Double) async throws

    /// The revocation log after `sequence`, in sequence order, at most `limit` entries (DESIGN §9). Sequence order is
    /// commit order, so a reader that has applied every entry up to `n` misses nothing by asking for the entries
    /// after `n`: this is what replicas and revocation-feed followers catch up with.
    func revocations(after sequence: Int64, limit: Int) async throws -> [RevocationEntry]

    /// Background cleanup at `now`: removes sessions whose absolute or idle lifetime has ended, and revoked sessions
    /// revoked before `revokedBefore` (their access tokens have expired), each with all its tokens, and the log
    /// entries of revocations before `revokedBefore`; and forgets the
    /// sealed successors of tokens retired more than `policy.reuseGrace` ago (the token stays, retired, so a late
    /// replay is still detected as reuse). Returns how many sessions were removed.
    func purge(now: Double, policy: RefreshPolicy, revokedBefore: Double) async throws -> Int

    /// Throws when the store cannot be reached (`/readyz`).
    func ping() async throws

    /// Releases the store's resources; no call may follow.
    func close() async
}

/// The in-memory store (`store.type: memory`): for tests and single-replica setups that accept losing sessions on
/// restart.
public actor MemorySessionStore: SessionStore {
    private var sessions: [String: SessionRecord] = [:]
    private var tokens: [[UInt8]: RefreshTokenRecord] = [:]
    /// The revocation log, in sequence order.
    private var log: [RevocationEntry] = []
    private var lastSequence: Int64 = 0

    public init() {}

    public func create(_ session: SessionRecord, refreshTokenHash: [UInt8]) {
        sessions[session.id] = session
        tokens[refreshTokenHash] = RefreshTokenRecord(hash: refreshTokenHash, sessionID: session.id)
    }

    public func lookup(refreshTokenHash: [UInt8]) -> (token: RefreshTokenRecord, session: SessionRecord)? {
        guard let token = tokens[refreshTokenHash], let session = sessions[token.sessionID] else { return nil }
        return (token, session)
    }

    public func rotate(oldHash: [UInt8], at: Double, sealedSuccessor: [UInt8], newHash: [UInt8], session: SessionRecord) -> Bool {
        guard var old = tokens[oldHash], old.state == .active, sessions[session.id]?.revokedAt == nil else { return false }
        old.state = .retired(at: at, successor: sealedSuccessor)
        tokens[oldHash] = old
        tokens[newHash] = RefreshTokenRecord(hash: newHash, sessionID: session.id)
        sessions[session.id] = session
        return true
    }

    public func revoke(sessionID: String, at: Double) {
        guard var session = sessions[sessionID], session.revokedAt == nil else { return }
        session.revokedAt = at
        sessions[sessionID] = session
        lastSequence += 1
        log.append(RevocationEntry(sequence: lastSequence, sessionID: sessionID, revokedAt: at))
    }

    public func revocations(after sequence: Int64, limit: Int) -> [RevocationEntry] {
        // The log is sorted by sequence: find the first entry after `sequence` by bisection.
        var low = 0
        var high = log.count
        while low < high {
            let mid = (low + high) / 2
            if log[mid].sequence <= sequence { low = mid + 1 } else { high = mid }
        }
        return Array(log[low..<min(log.count, low + max(0, limit))])
    }

    public func purge(now: Double, policy: RefreshPolicy, revokedBefore: Double) -> Int {
        let expired = Set(sessions.values.filter { $0.isPurgeable(now: now, policy: policy, revokedBefore: revokedBefore) }.map(\.id))
        for id in expired { sessions[id] = nil }
        log.removeAll { $0.revokedAt < revokedBefore }
        tokens = tokens.filter { !expired.contains($0.value.sessionID) }
        for (hash, token) in tokens {
            if case .retired(let at, let successor) = token.state, !successor.isEmpty, at < now - policy.reuseGrace {
                tokens[hash]?.state = .retired(at: at, successor: [])
            }
        }
        return expired.count
    }

    public func ping() {}

    public func close() {}
}

/// One entry of a store's revocation log: a session revoked (logout, RFC 7009 revoke, refresh-token reuse).
public struct RevocationEntry: Sendable, Hashable {
    /// The entry's place in the log. Entries commit in sequence order, so a reader that has applied every entry up
    /// to `n` and then asks for the entries after `n` misses none. Numbers may have gaps.
    public var sequence: Int64
    public var sessionID: String
    /// When the session was revoked (seconds since 1970); its access tokens are refused until the last one expires.
    public var revokedAt: Double

    public init(sequence: Int64, sessionID: String, revokedAt: Double) {
        self.sequence = sequence
        self.sessionID = sessionID
        self.revokedAt = revokedAt
    }
}

extension SessionRecord {
    /// Whether `purge` removes this session: past its absolute or idle lifetime, or revoked before `revokedBefore`.
    public func isPurgeable(now: Double, policy: RefreshPolicy, revokedBefore: Double) -> Bool {
        if let revokedAt { return revokedAt < revokedBefore || createdAt + policy.absoluteLifetime <= now }
        return createdAt + policy.absoluteLifetime <= now || lastRefreshedAt + policy.idleLifetime <= now
    }
}
