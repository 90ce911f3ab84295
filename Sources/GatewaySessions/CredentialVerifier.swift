import GatewayJSON

/// Who a successful login is: what goes into the session and its tokens.
public struct AuthenticatedUser: Sendable, Hashable {
    public var subject: String
    public var scopes: [String]
    /// Extra claims for the access tokens (registered claim names are ignored when minting).
    public var claims: JSONObject

    public init(subject: String, scopes: [String], claims: JSONObject) {
        self.subject = subject
        self.scopes = scopes
        self.claims = claims
    }
}

/// Checks a username and password (DESIGN §4: the users file, or a `login_upstream`).
public protocol CredentialVerifier: Sendable {
    /// The user, or nil when the username or password is wrong (one answer for both, in about the same time).
    /// Throws `TokenServiceError` when the check could not be made (busy, login upstream down).
    func authenticate(username: String, password: String) async throws(TokenServiceError) -> AuthenticatedUser?
}
