import GatewayJSON

/// Finding an issuer's key set from its identifier: OpenID Connect Discovery 1.0 §4 and OAuth 2.0 Authorization
/// Server Metadata (RFC 8414 §3).
public enum IssuerMetadata {
    /// Where the metadata may be, in the order they are tried: `<issuer>/.well-known/openid-configuration` (a
    /// trailing "/" of the issuer removed first), then `/.well-known/oauth-authorization-server` inserted between
    /// the host and the issuer's path. nil when the issuer is not an absolute http(s) URL without a query.
    public static func candidates(issuer: String) -> [RemoteURL]? {
        guard let url = RemoteURL(issuer), !url.target.contains("?") else { return nil }
        var path = url.target
        while path.hasSuffix("/") { path.removeLast() }
        return [
            url.replacingTarget(path + "/.well-known/openid-configuration"),
            url.replacingTarget("/.well-known/oauth-authorization-server" + path),
        ]
    }

    /// The `jwks_uri` of a metadata document. The document's `issuer` must equal the configured one exactly (OIDC
    /// Discovery §4.3, RFC 8414 §3.3 — otherwise one issuer's metadata could make us trust another's keys), and the
    /// key set's URL must be `https` (plain `http` only to a loopback address).
    public static func jwksURI(from document: [UInt8], issuer: String) throws(KeySetFetchError) -> RemoteURL {
        let value: JSONValue
        do {
            value = try JSONParser.parse(document, limits: JSONLimits(maxDepth: 16, maxBytes: 1 << 20))
        } catch {
            throw KeySetFetchError(
                .discoveryInvalid, "the issuer metadata is not valid JSON (\(error.code.rawValue) at \(error.path.jsonPathString))")
        }
        guard case .object(let object) = value else {
            throw KeySetFetchError(.discoveryInvalid, "the issuer metadata is not a JSON object")
        }
        guard case .string(let named)? = object["issuer"] else {
            throw KeySetFetchError(.discoveryInvalid, "the issuer metadata has no \"issuer\" string")
        }
        guard named == issuer else {
            throw KeySetFetchError(.discoveryInvalid, "the issuer metadata names another issuer, \(JSONWriter.quoted(named))")
        }
        guard case .string(let text)? = object["jwks_uri"] else {
            throw KeySetFetchError(.discoveryInvalid, "the issuer metadata has no \"jwks_uri\" string")
        }
        guard let url = RemoteURL(text) else {
            throw KeySetFetchError(.discoveryInvalid, "the issuer metadata's jwks_uri is not an absolute http(s) URL")
        }
        guard url.isAllowedForKeys else {
            throw KeySetFetchError(
                .discoveryInvalid,
                "the issuer metadata's jwks_uri \(JSONWriter.quoted(url.description)) must be https (http only to a loopback address)")
        }
        return url
    }
}
