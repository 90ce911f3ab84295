import GatewayJSON

extension TokenVerifier {
    /// The `iss` claim of a structurally valid token, read WITHOUT verifying anything — only to decide whose key
    /// set to refetch after `verify` answered `key_unknown`. Never use it to trust the token. nil when the token is
    /// malformed or its `iss` is not a string.
    public func unverifiedIssuer(of token: UnsafeRawBufferPointer) -> String? {
        guard token.count <= maxTokenBytes, token.count > 0 else { return nil }
        return withUnsafeTemporaryAllocation(byteCount: token.count, alignment: 1) { scratch -> String? in
            guard case .success(let decoded) = CompactJWS.decode(token, scratch: scratch),
                case .object(let claims)? = try? JSONParser.parse(
                    decoded.payload,
                    limits: JSONLimits(maxDepth: JSONLimits.token.maxDepth, maxBytes: max(JSONLimits.token.maxBytes, maxTokenBytes))),
                case .string(let iss)? = claims["iss"]
            else { return nil }
            return iss
        }
    }
}
