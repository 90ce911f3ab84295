/// A login session: what every token of one login shares (DESIGN §7).
public struct SessionRecord: Sendable, Hashable {
    public var id: String
    public var subject: String
    public var scopes: [String]
    public var clientID: String
    /// The user's extra claims at login, a compact JSON object (`{}` when none), copied into every access token of
    /// the session.
    public var claims: String
    /// Start of the absolute lifetime; rotation never extends it.
    public var createdAt: Double
    /// Start of the idle lifetime; each refresh restarts it.
    public var lastRefreshedAt: Double
    public var revokedAt: Double?

    public init(id: String, subject: String, scopes: [String], clientID: String, claims: String = "{}", createdAt: Double) {
        self.id = id
        self.subject = subject
        self.scopes = scopes
        self.clientID = clientID
        self.claims = claims
        self.createdAt = createdAt
        self.lastRefreshedAt = createdAt
    }
}

/// One refresh token of a session, by hash.
public struct RefreshTokenRecord: Sendable, Hashable {
    public enum State: Sendable, Hashable {
        case active
        /// Rotated at `at`; `successor` is the sealed answer given then, replayable within the grace window.
        case retired(at: Double, successor: [UInt8])
    }

    public var hash: [UInt8]
    public var sessionID: String
    public var state: State

    public init(hash: [UInt8], sessionID: String, state: State = .active) {
        self.hash = hash
        self.sessionID = sessionID
        self.state = state
    }
}

/// The lifetimes of `token_service`.
public struct RefreshPolicy: Sendable, Hashable {
    public var absoluteLifetime: Double
    public var idleLifetime: Double
    public var reuseGrace: Double

    public init(absoluteLifetime: Double, idleLifetime: Double, reuseGrace: Double) {
        self.absoluteLifetime = absoluteLifetime
        self.idleLifetime = idleLifetime
        self.reuseGrace = reuseGrace
    }
}

/// What to do with a presented refresh token (RFC 6749 §6, RFC 9700 §4.14.2), decided from the records alone so
/// every case is testable without a store. The store applies `.rotate` with one conditional update (active →
/// retired), so that of several concurrent refreshes exactly one rotates and the others see `.replay`.
public enum RefreshDecision: Sendable, Hashable {
    /// Issue a new pair, retire the presented token, restart the idle clock.
    case rotate(SessionRecord)
    /// A retry within the grace window: answer with the same successor pair, sealed under the presented token.
    case replay(sealedSuccessor: [UInt8])
    /// A retired token presented after the grace window: revoke the whole session.
    case reuseDetected(sessionID: String)
    /// `invalid_grant`, with the stable reason for logs.
    case invalid(Reason)

    public enum Reason: String, Sendable, Hashable {
        case unknownToken = "refresh_token_unknown"
        case sessionRevoked = "session_revoked"
        case sessionExpired = "session_expired"
        case sessionIdle = "session_idle_expired"
        case clientMismatch = "client_mismatch"
    }

    public static func decide(
        token: RefreshTokenRecord?, session: SessionRecord?, clientID: String?, now: Double, policy: RefreshPolicy
    ) -> RefreshDecision {
        guard let token, let session, session.id == token.sessionID else { return .invalid(.unknownToken) }
        if session.revokedAt != nil { return .invalid(.sessionRevoked) }
        if let clientID, clientID != session.clientID { return .invalid(.clientMismatch) }
        switch token.state {
        case .retired(let at, let successor):
            // Within the grace window a retry (lost response, parallel tabs) gets the same answer; after it, a
            // retired token in anyone's hands means the family leaked.
            return now - at <= policy.reuseGrace ? .replay(sealedSuccessor: successor) : .reuseDetected(sessionID: session.id)
        case .active:
            if now >= session.createdAt + policy.absoluteLifetime { return .invalid(.sessionExpired) }
            if now >= session.lastRefreshedAt + policy.idleLifetime { return .invalid(.sessionIdle) }
            var refreshed = session
            refreshed.lastRefreshedAt = now
            return .rotate(refreshed)
        }
    }
}
