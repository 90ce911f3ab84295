import GatewayJSON

/// The result of a successful verification: the claims the gateway uses, plus the whole claim set.
public struct VerifiedToken: Sendable, Hashable {
    public var issuer: String
    public var subject: String
    public var audiences: [String]
    /// From `scope` (space-separated string) or else `scp` (array of strings).
    public var scopes: [String] {
        didSet { self.scopeText = self.scopes.joined(separator: " ") }
    }
    /// `scopes` joined with spaces, as the identity header carries them: made once when the token is verified (a
    /// cached token is forwarded many times).
    public private(set) var scopeText: String
    public var expiresAt: Double
    public var notBefore: Double?
    public var issuedAt: Double?
    /// `jti`
    public var tokenID: String?
    /// `sid`, used for session revocation.
    public var sessionID: String?
    /// The whole claim set, for identity-header injection.
    public var claims: JSONObject

    public init(
        issuer: String, subject: String, audiences: [String], scopes: [String], expiresAt: Double, notBefore: Double?,
        issuedAt: Double?, tokenID: String?, sessionID: String?, claims: JSONObject
    ) {
        self.issuer = issuer
        self.subject = subject
        self.audiences = audiences
        self.scopes = scopes
        self.scopeText = scopes.joined(separator: " ")
        self.expiresAt = expiresAt
        self.notBefore = notBefore
        self.issuedAt = issuedAt
        self.tokenID = tokenID
        self.sessionID = sessionID
        self.claims = claims
    }
}
