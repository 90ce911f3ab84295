import GatewayJSON
import GatewayTokens

/// Mints access tokens (RFC 9068 JWT profile): header `{"alg", "typ": "at+jwt", "kid"}`, claims `iss`, `sub`, `aud`,
/// `exp`, `iat`, `jti`, `client_id`, `scope`, optional `sid`, then the caller's extra claims (which can never
/// override the registered ones).
public struct AccessTokenIssuer: Sendable {
    public let issuer: String
    public let audience: String
    public let key: SigningKey

    public init(issuer: String, audience: String, key: SigningKey) {
        self.issuer = issuer
        self.audience = audience
        self.key = key
    }

    static let registeredClaims: Set<String> = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "client_id", "scope"]

    public func issue(
        subject: String, scopes: [String], lifetime: Int, now: Double, clientID: String = "portcullis",
        sessionID: String? = nil, claims extra: JSONObject = JSONObject()
    ) throws -> String {
        let issuedAt = now.rounded(.down)
        var claims = JSONObject()
        claims["iss"] = .string(issuer)
        claims["sub"] = .string(subject)
        claims["aud"] = .string(audience)
        claims["exp"] = .number(issuedAt + Double(lifetime))
        claims["iat"] = .number(issuedAt)
        claims["jti"] = .string(Self.randomID())
        if let sessionID { claims["sid"] = .string(sessionID) }
        claims["client_id"] = .string(clientID)
        claims["scope"] = .string(scopes.joined(separator: " "))
        for member in extra where !Self.registeredClaims.contains(member.name) {
            claims[member.name] = member.value
        }
        let header = JSONObject([("alg", .string(key.algorithm.rawValue)), ("typ", .string("at+jwt")), ("kid", .string(key.kid))])
        let signingInput =
            Base64URL.encode(Array(JSONWriter.string(.object(header)).utf8)) + "."
            + Base64URL.encode(Array(JSONWriter.string(.object(claims)).utf8))
        let signature = try key.sign(Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }

    /// 128 random bits, base64url: unique token ids without coordination.
    static func randomID() -> String {
        Base64URL.encode(randomBytes(16))
    }
}
