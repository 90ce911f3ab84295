import GatewayJSON
import GatewayTokens
import NIOConcurrencyHelpers

/// The token service's logic (DESIGN §7), independent of HTTP: the password and refresh-token grants, revocation,
/// logout and introspection over a `SessionStore`. Revocations are reported through `onRevoke`, which the server
/// wires to every event loop's revoked-session set, so the data path refuses the session's access tokens at once.
public final class SessionService: Sendable {
    public struct Settings: Sendable {
        public var accessTokenLifetime: Int
        public var refreshPolicy: RefreshPolicy
        /// The data path's leeway: a revoked session is remembered until its last access token is past `exp` + leeway.
        public var leeway: Double
        public var defaultClientID: String

        public init(accessTokenLifetime: Int, refreshPolicy: RefreshPolicy, leeway: Double, defaultClientID: String = "portcullis") {
            self.accessTokenLifetime = accessTokenLifetime
            self.refreshPolicy = refreshPolicy
            self.leeway = leeway
            self.defaultClientID = defaultClientID
        }

        /// How long a revocation must be remembered: until every access token minted before it has expired.
        public var revocationRetention: Double { Double(accessTokenLifetime) + leeway }
    }

    /// A successful grant: the token response body (RFC 6749 §5.1) and who it is for, for the access log.
    /// What happened, for metrics: `result` is `success` (`rotated` / `replayed` for refreshes) or the error's reason.
    public enum Event: Sendable, Hashable {
        case login(result: String)
        case refresh(result: String)
        /// `cause`: `logout`, `revoke` or `reuse`.
        case revocation(cause: String)
    }

    public struct Grant: Sendable {
        public var body: [UInt8]
        public var subject: String
        public var sessionID: String
    }

    public let settings: Settings
    /// Mints the access tokens; `replaceKeys` swaps it when the fleet's signing key changes.
    public var signer: AccessTokenIssuer { keys.withLockedValue { $0.signer } }
    public let store: any SessionStore
    let credentials: any CredentialVerifier
    /// Failed-login counts (in this process, or shared by the fleet); a reload with the same limits hands it to the
    /// next service.
    public let limiter: any LoginFailureCounter
    /// Verifies the service's own access tokens (revoke, logout, introspection).
    var verifier: TokenVerifier { keys.withLockedValue { $0.verifier } }
    /// Behind a lock because keys kept in a shared store change while the service runs (DESIGN §9); only the token
    /// endpoints read them, never the proxied data path.
    private let keys: NIOLockedValueBox<(signer: AccessTokenIssuer, verifier: TokenVerifier)>
    let onRevoke: @Sendable (_ sessionID: String, _ until: Double) -> Void
    /// Called after a revocation was written to the store (and so to its revocation log): the moment other
    /// replicas and feed readers can see it, so the server's revocation sync catches up now rather than at its next
    /// poll.
    let onRevocationLogged: @Sendable () -> Void
    let onEvent: @Sendable (Event) -> Void
    let clock: @Sendable () -> Double
    /// Revoked sessions still within `revocationRetention`, for introspection without a store query.
    private let revoked = NIOLockedValueBox<[String: Double]>([:])
    /// The sessions of the refresh tokens issued here last, so a refresh with one of them skips the lookup.
    let issued = IssuedRefreshTokens(capacity: 16_384)

    public init(
        settings: Settings, signer: AccessTokenIssuer, store: any SessionStore, credentials: any CredentialVerifier,
        limiter: any LoginFailureCounter, verifier: TokenVerifier, onRevoke: @escaping @Sendable (String, Double) -> Void,
        onEvent: @escaping @Sendable (Event) -> Void = { _ in }, clock: @escaping @Sendable () -> Double,
        onRevocationLogged: @escaping @Sendable () -> Void = {}
    ) {
        self.onEvent = onEvent
        self.onRevocationLogged = onRevocationLogged
        self.settings = settings
        self.keys = NIOLockedValueBox((signer, verifier))
        self.store = store
        self.credentials = credentials
        self.limiter = limiter
        self.onRevoke = onRevoke
        self.clock = clock
    }

    /// Signs with `signer` and trusts `verifier` from now on (a new key of the fleet activated, or one was added
    /// or dropped). Requests already past their key lookup finish with the keys they read.
    public func replaceKeys(signer: AccessTokenIssuer, verifier: TokenVerifier) {
        keys.withLockedValue { $0 = (signer, verifier) }
    }

    // MARK: - Grants

    /// `/auth/login` and `grant_type=password`. Rate limits are checked before the password; a wrong username and
    /// a wrong password give the same error (`badCredentials(status: failureStatus)`).
    public func passwordGrant(
        username: String, password: String, scope: String?, clientID: String?, clientAddress: String?, failureStatus: Int
    ) async throws(TokenServiceError) -> Grant {
        do {
            let grant = try await checkedPasswordGrant(
                username: username, password: password, scope: scope, clientID: clientID, clientAddress: clientAddress,
                failureStatus: failureStatus)
            onEvent(.login(result: "success"))
            return grant
        } catch {
            onEvent(.login(result: error.reason))
            throw error
        }
    }

    private func checkedPasswordGrant(
        username: String, password: String, scope: String?, clientID: String?, clientAddress: String?, failureStatus: Int
    ) async throws(TokenServiceError) -> Grant {
        guard !username.isEmpty, username.utf8.count <= 256 else { throw .invalidRequest("username must be 1 to 256 bytes") }
        guard !password.isEmpty, password.utf8.count <= 1024 else { throw .invalidRequest("password must be 1 to 1024 bytes") }
        let requested = try Self.parseScope(scope)
        let client = try clientIDOrDefault(clientID)
        // A counter that cannot answer fails closed (503): an uncounted guess is what the limit exists to prevent.
        let wait: Int?
        do {
            wait = try await limiter.retryAfter(username: username, address: clientAddress, now: clock())
        } catch {
            throw .storeFailure(error)
        }
        if let wait { throw .tooManyRequests(retryAfter: wait) }
        guard let user = try await credentials.authenticate(username: username, password: password) else {
            do {
                try await limiter.recordFailure(username: username, address: clientAddress, now: clock())
            } catch {
                throw .storeFailure(error)
            }
            throw .badCredentials(status: failureStatus)
        }
        // Clearing is a courtesy to the real user; failing to clear changes nothing about the answer.
        try? await limiter.recordSuccess(username: username)
        let scopes = try Self.grantedScopes(requested: requested, allowed: user.scopes)

        let now = clock()
        let session = SessionRecord(
            id: Base64URL.encode(randomBytes(16)), subject: user.subject, scopes: scopes, clientID: client,
            claims: JSONWriter.string(.object(user.claims)), createdAt: now)
        let refreshToken = RefreshToken.generate()
        let body = try tokenResponse(session: session, scopes: scopes, refreshToken: refreshToken, now: now)
        let hash = RefreshToken.hash(refreshToken)
        do {
            try await store.create(session, refreshTokenHash: hash)
        } catch {
            throw .storeFailure(error)
        }
        issued.remember(hash, session: session)
        return Grant(body: body, subject: session.subject, sessionID: session.id)
    }

    /// `grant_type=refresh_token`: rotation, replay within the grace window, reuse detection (DESIGN §7).
    public func refreshGrant(refreshToken: String, scope: String?, clientID: String?) async throws(TokenServiceError) -> Grant {
        do {
            let (grant, replayed) = try await rotateOrReplay(refreshToken: refreshToken, scope: scope, clientID: clientID)
            onEvent(.refresh(result: replayed ? "replayed" : "rotated"))
            return grant
        } catch {
            onEvent(.refresh(result: error.reason))
            throw error
        }
    }

    private func rotateOrReplay(refreshToken: String, scope: String?, clientID: String?) async throws(TokenServiceError) -> (Grant, Bool) {
        guard !refreshToken.isEmpty else { throw .invalidRequest("refresh_token is required") }
        let requested = try Self.parseScope(scope)
        if let clientID { _ = try clientIDOrDefault(clientID) }
        guard RefreshToken.isWellFormed(refreshToken) else {
            throw .invalidGrant(RefreshDecision.Reason.unknownToken.rawValue, "The refresh token is invalid")
        }
        let hash = RefreshToken.hash(refreshToken)
        // A token issued here: decide on the session kept from then and rotate at once (`IssuedRefreshTokens`). If
        // the store refuses (the token was used meanwhile, here or on another replica, or the session revoked), or
        // anything but a rotation is decided, the usual way below decides from the store.
        if let session = issued.take(hash) {
            let now = clock()
            let token = RefreshTokenRecord(hash: hash, sessionID: session.id, state: .active)
            let decision = RefreshDecision.decide(
                token: token, session: session, clientID: clientID, now: now, policy: settings.refreshPolicy)
            if case .rotate(let session) = decision,
                let grant = try await rotate(hash, of: refreshToken, session: session, requested: requested, now: now)
            {
                return (grant, false)
            }
        }
        // Two rounds at most: a lost race (another refresh rotated the token between our lookup and our update)
        // is decided again, and then it is a replay of the winner's answer.
        for _ in 0..<2 {
            let found: (token: RefreshTokenRecord, session: SessionRecord)?
            do {
                found = try await store.lookup(refreshTokenHash: hash)
            } catch {
                throw .storeFailure(error)
            }
            let now = clock()
            let decision = RefreshDecision.decide(
                token: found?.token, session: found?.session, clientID: clientID, now: now, policy: settings.refreshPolicy)
            switch decision {
            case .rotate(let session):
                if let grant = try await rotate(hash, of: refreshToken, session: session, requested: requested, now: now) {
                    return (grant, false)
                }
            case .replay(let sealed):
                guard let body = SuccessorSeal.open(sealed, with: refreshToken), let session = found?.session else {
                    throw .invalidGrant("refresh_token_reused", "The refresh token was already used")
                }
                return (Grant(body: body, subject: session.subject, sessionID: session.id), true)
            case .reuseDetected(let sessionID):
                // A store failure answers 503: the client retries with the same token, which is reuse again.
                try await revokeSession(sessionID, cause: "reuse")
                throw .invalidGrant("refresh_token_reused", "The refresh token was already used; the session is revoked")
            case .invalid(let reason):
                throw .invalidGrant(reason.rawValue, Self.describe(reason))
            }
        }
        throw .serverError
    }

    /// Rotates `refreshToken` (whose hash is `hash`) to a new one for `session` (as decided, `lastRefreshedAt` = now):
    /// the grant, or nil when the store refused because the token is no longer active or the session was revoked.
    private func rotate(
        _ hash: [UInt8], of refreshToken: String, session: SessionRecord, requested: [String]?, now: Double
    ) async throws(TokenServiceError) -> Grant? {
        let scopes = try Self.grantedScopes(requested: requested, allowed: session.scopes)
        let successor = RefreshToken.generate()
        let successorHash = RefreshToken.hash(successor)
        let body = try tokenResponse(session: session, scopes: scopes, refreshToken: successor, now: now)
        let rotated: Bool
        do {
            let sealed = try SuccessorSeal.seal(body, under: refreshToken)
            rotated = try await store.rotate(
                oldHash: hash, at: now, sealedSuccessor: sealed, newHash: successorHash, session: session)
        } catch {
            throw .storeFailure(error)
        }
        guard rotated else { return nil }
        issued.remember(successorHash, session: session)
        return Grant(body: body, subject: session.subject, sessionID: session.id)
    }

    // MARK: - Revocation

    /// RFC 7009: revokes the session of `token` (a refresh token or one of our access tokens). Unknown, malformed or
    /// foreign tokens are ignored: the caller answers 200 either way.
    public func revoke(token: String) async throws(TokenServiceError) {
        if RefreshToken.isWellFormed(token) {
            let found: (token: RefreshTokenRecord, session: SessionRecord)?
            do {
                found = try await store.lookup(refreshTokenHash: RefreshToken.hash(token))
            } catch {
                throw .storeFailure(error)
            }
            if let session = found?.session { try await revokeSession(session.id, cause: "revoke") }
            return
        }
        // An access token: revoke its session if it is one of ours and still valid (an expired one needs nothing).
        if case .success(let verified) = verifier.verify(token, now: clock()), let sessionID = verified.sessionID {
            try await revokeSession(sessionID, cause: "revoke")
        }
    }

    /// `/auth/logout`: revokes the session of `accessToken`, which must be one of ours and valid. Returns its subject,
    /// or throws `storeFailure` when the revocation could not be written (the client should retry).
    public func logout(accessToken: String) async throws(TokenServiceError) -> Result<String, TokenRejection> {
        switch verifier.verify(accessToken, now: clock()) {
        case .failure(let rejection):
            return .failure(rejection)
        case .success(let verified):
            if let sessionID = verified.sessionID {
                // A token of an already revoked session is refused like on the data path.
                if isRevoked(sessionID, now: clock()) { return .failure(TokenRejection(.tokenRevoked)) }
                try await revokeSession(sessionID, cause: "logout")
            }
            return .success(verified.subject)
        }
    }

    /// Revokes `sessionID` (logout, RFC 7009, reuse detection): its refresh tokens stop working in the store, its
    /// access tokens on the data path. Throws `storeFailure` when the store write failed twice: this process's data
    /// path refuses the session anyway, but the rest of the fleet learns of it only from the store, so the client
    /// must be told to retry.
    public func revokeSession(_ sessionID: String, cause: String) async throws(TokenServiceError) {
        let now = clock()
        let until = now + settings.revocationRetention
        // This process refuses the session at once, before the store round trip.
        onRevoke(sessionID, until)
        do {
            do {
                try await store.revoke(sessionID: sessionID, at: now)
            } catch {
                try await store.revoke(sessionID: sessionID, at: now)
            }
        } catch {
            throw .storeFailure(error)
        }
        // Only a written revocation counts as done for logout and introspection: a logout retried after a failed
        // write must write it again, not be refused as already revoked.
        remember(sessionID, until: until, now: now)
        // Counted once written: a retried logout after a failed write is one revocation.
        onEvent(.revocation(cause: cause))
        onRevocationLogged()
    }

    /// A revocation learnt from the store's revocation log (another replica's, or this one's after a restart):
    /// introspection and logout treat the session as revoked until `until`.
    public func noteRevoked(_ sessionID: String, until: Double) {
        remember(sessionID, until: until, now: clock())
    }

    /// Background cleanup (expired and long-revoked sessions, stale successors). Returns how many sessions went.
    public func purge() async throws -> Int {
        let now = clock()
        return try await store.purge(now: now, policy: settings.refreshPolicy, revokedBefore: now - settings.revocationRetention)
    }

    private func remember(_ sessionID: String, until: Double, now: Double) {
        revoked.withLockedValue { revoked in
            revoked[sessionID] = until
            if revoked.count > 1024 { revoked = revoked.filter { $0.value > now } }
        }
    }

    func isRevoked(_ sessionID: String, now: Double) -> Bool {
        revoked.withLockedValue { ($0[sessionID] ?? 0) > now }
    }

    // MARK: - Introspection

    /// RFC 7662: `{"active": false}` for anything not currently usable; otherwise what the token stands for.
    public func introspect(token: String) async -> JSONObject {
        let inactive = JSONObject([("active", .bool(false))])
        let now = clock()
        if RefreshToken.isWellFormed(token) {
            guard let found = try? await store.lookup(refreshTokenHash: RefreshToken.hash(token)),
                case .rotate = RefreshDecision.decide(
                    token: found.token, session: found.session, clientID: nil, now: now, policy: settings.refreshPolicy)
            else { return inactive }
            let session = found.session
            let policy = settings.refreshPolicy
            let expiry = min(session.createdAt + policy.absoluteLifetime, session.lastRefreshedAt + policy.idleLifetime)
            return JSONObject([
                ("active", .bool(true)), ("token_type", .string("refresh_token")), ("iss", .string(signer.issuer)),
                ("sub", .string(session.subject)), ("scope", .string(session.scopes.joined(separator: " "))),
                ("client_id", .string(session.clientID)), ("exp", .number(expiry.rounded(.down))),
                ("iat", .number(session.createdAt.rounded(.down))), ("sid", .string(session.id)),
            ])
        }
        guard case .success(let verified) = verifier.verify(token, now: now) else { return inactive }
        if let sessionID = verified.sessionID, isRevoked(sessionID, now: now) { return inactive }
        var result = JSONObject([("active", .bool(true)), ("token_type", .string("Bearer"))])
        for name in ["iss", "sub", "aud", "exp", "iat", "jti", "sid", "client_id", "scope"] {
            if let value = verified.claims[name] { result[name] = value }
        }
        return result
    }

    // MARK: - Helpers

    /// The token response (RFC 6749 §5.1) for `session`, with a new access token.
    func tokenResponse(session: SessionRecord, scopes: [String], refreshToken: String, now: Double) throws(TokenServiceError) -> [UInt8] {
        let claims: JSONObject
        do {
            claims = try JSONParser.parse(Array(session.claims.utf8), limits: .document).objectValue ?? JSONObject()
        } catch {
            claims = JSONObject()
        }
        let accessToken: String
        do {
            accessToken = try signer.issue(
                subject: session.subject, scopes: scopes, lifetime: settings.accessTokenLifetime, now: now,
                clientID: session.clientID, sessionID: session.id, claims: claims)
        } catch {
            throw .serverError
        }
        let policy = settings.refreshPolicy
        let refreshExpiry = min(session.createdAt + policy.absoluteLifetime, now + policy.idleLifetime)
        let response = JSONObject([
            ("access_token", .string(accessToken)),
            ("token_type", .string("Bearer")),
            ("expires_in", .number(Double(settings.accessTokenLifetime))),
            ("refresh_token", .string(refreshToken)),
            ("refresh_token_expires_in", .number(max(0, (refreshExpiry - now).rounded(.down)))),
            ("scope", .string(scopes.joined(separator: " "))),
        ])
        return Array(JSONWriter.string(.object(response)).utf8)
    }

    func clientIDOrDefault(_ clientID: String?) throws(TokenServiceError) -> String {
        guard let clientID else { return settings.defaultClientID }
        guard (1...128).contains(clientID.utf8.count), clientID.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw .invalidRequest("client_id must be 1 to 128 visible ASCII characters")
        }
        return clientID
    }

    /// RFC 6749 §3.3 scope: space-separated scope-tokens (%x21 / %x23-5B / %x5D-7E). nil or empty: not requested.
    static func parseScope(_ scope: String?) throws(TokenServiceError) -> [String]? {
        guard let scope, !scope.isEmpty else { return nil }
        guard scope.utf8.count <= 4096 else { throw .invalidRequest("scope is too long") }
        let tokens = scope.split(separator: " ", omittingEmptySubsequences: true)
        for token in tokens {
            guard token.utf8.allSatisfy({ $0 == 0x21 || (0x23...0x5B).contains($0) || (0x5D...0x7E).contains($0) }) else {
                throw .invalidRequest("scope contains a character outside RFC 6749 scope-token")
            }
        }
        var seen: Set<Substring> = []
        return tokens.filter { seen.insert($0).inserted }.map(String.init)
    }

    /// The scopes to grant: all allowed ones when none were requested, else the requested ones if all are allowed.
    static func grantedScopes(requested: [String]?, allowed: [String]) throws(TokenServiceError) -> [String] {
        guard let requested else { return allowed }
        guard requested.allSatisfy(allowed.contains) else { throw .invalidScope }
        return requested
    }

    static func describe(_ reason: RefreshDecision.Reason) -> String {
        switch reason {
        case .unknownToken: "The refresh token is invalid"
        case .sessionRevoked: "The session has been revoked"
        case .sessionExpired: "The session has expired"
        case .sessionIdle: "The session expired after inactivity"
        case .clientMismatch: "The refresh token was issued to another client"
        }
    }
}
