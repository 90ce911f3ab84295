import GatewayConfig
import GatewaySessions
import GatewayTokens

/// The token service's keys as the rest of the gateway sees them: the signing key store (created on first start),
/// the issuer policy that makes the gateway trust its own tokens, and the published key set.
public enum TokenServiceKeys {
    /// Opens (or creates) the key store of `service`.
    public static func store(_ service: TokenService) throws(ConfigErrors) -> SigningKeyStore {
        guard let algorithm = JWSAlgorithm(rawValue: service.signingAlgorithm) else {
            throw ConfigErrors([ConfigError(.invalidValue, path: "token_service.signing.algorithm", "unsupported algorithm")])
        }
        do {
            return try SigningKeyStore.open(directory: service.keyDirectory, algorithm: algorithm)
        } catch {
            throw ConfigErrors([ConfigError(.unreadableFile, path: "token_service.signing.key_dir", "\(error)")])
        }
    }

    /// The signing key, the own-issuer policy (every published key, each pinned to its algorithm; audience
    /// `token_service.audience`, type `at+jwt`) and the JWKS document. Keys that stopped being current get their
    /// retirement marker now; retired keys are published for `retention` seconds after it.
    public static func open(
        _ service: TokenService, now: Double, retention: Double
    ) throws(ConfigErrors) -> (SigningKey, IssuerPolicy, String) {
        var store = try store(service)
        do {
            try store.markRetired(now: now)
        } catch {
            throw ConfigErrors([ConfigError(.unreadableFile, path: "token_service.signing.key_dir", "\(error)")])
        }
        let (policy, jwks) = Self.published(
            store.published(now: now, retention: retention), issuer: service.issuer, audience: service.audience)
        return (store.current, policy, jwks)
    }

    /// What the published signing keys mean to the gateway, wherever they are kept (`key_dir` or a postgres store):
    /// the own-issuer policy (every key pinned to its algorithm; `audience`, type `at+jwt`) and the JWKS document.
    static func published(_ keys: [SigningKey], issuer: String, audience: String) -> (IssuerPolicy, String) {
        let verificationKeys = keys.map(\.verificationKey)
        let policy = IssuerPolicy(
            issuer: issuer, keys: verificationKeys, algorithms: Set(verificationKeys.map(\.algorithm)), audiences: [audience],
            tokenTypes: ["at+jwt", "application/at+jwt"])
        return (policy, SigningKeyStore.jwks(of: keys))
    }
}
