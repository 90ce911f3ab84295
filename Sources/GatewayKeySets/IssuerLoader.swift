import GatewayConfig
import GatewayTokens

/// Builds the verifier's immutable key table from the `issuers` of the configuration. Every problem is a
/// `ConfigError` naming the issuer's JSON path; a bad key inside a JWKS file is skipped with a warning instead.
/// Remote key sets (`jwks_uri`, `discovery`) are not fetched here: their issuers start without keys, and
/// `RemoteKeySets` fills them in.
public enum IssuerLoader {
    public struct Loaded: Sendable {
        /// Every issuer; the remote ones without keys yet.
        public var verifier: TokenVerifier
        /// The policies the verifier was built from, in order (the token service's own first).
        public var policies: [IssuerPolicy]
        /// The issuers whose keys are fetched over the network.
        public var remote: [RemoteKeySource]
        /// Human-readable warnings (skipped JWKS keys), each with its JSON path.
        public var warnings: [String]
    }

    /// - Parameter additional: issuers trusted besides the configured ones (the token service's own).
    public static func load(_ configuration: GatewayConfiguration, additional: [IssuerPolicy] = []) throws(ConfigErrors) -> Loaded {
        var policies: [IssuerPolicy] = additional
        var errors: [ConfigError] = []
        var warnings: [String] = []
        var remote: [RemoteKeySource] = []
        for (index, issuer) in configuration.issuers.enumerated() {
            let path = "issuers[\(index)]"
            let algorithms = Set(issuer.algorithms.compactMap(JWSAlgorithm.init(rawValue:)))
            var keys: [VerificationKey] = []
            do {
                switch issuer.keySource {
                case .hmacSecret(let secret):
                    let alg = try single(algorithms, path: path, source: "hmac_secret")
                    keys.append(try VerificationKey.hmac(secret: Array(secret.utf8), algorithm: alg, kid: issuer.kid))
                case .hmacSecretFile(let file):
                    let alg = try single(algorithms, path: path, source: "hmac_secret_file")
                    let secret = try readSecret(file, path: "\(path).hmac_secret_file")
                    keys.append(try VerificationKey.hmac(secret: secret, algorithm: alg, kid: issuer.kid))
                case .publicKeyFile(let file):
                    let alg = try single(algorithms, path: path, source: "public_key_file")
                    let pem = String(decoding: try read(file, path: "\(path).public_key_file"), as: UTF8.self)
                    keys.append(try VerificationKey.publicKeyPEM(pem, algorithm: alg, kid: issuer.kid))
                case .jwksFile(let file):
                    let result = try VerificationKey.jwks(try read(file, path: "\(path).jwks_file"), allowedAlgorithms: algorithms)
                    for skipped in result.skipped {
                        warnings.append(
                            "\(path).jwks_file: skipped key \(skipped.kid.map { "\"\($0)\"" } ?? "without kid"): \(skipped.reason)")
                    }
                    if result.keys.isEmpty {
                        throw ConfigError(.invalidValue, path: "\(path).jwks_file", "no usable key in \(file)")
                    }
                    keys = result.keys
                case .jwksURI, .discovery:
                    if let caFile = issuer.caFile { _ = try read(caFile, path: "\(path).ca_file") }
                    remote.append(try RemoteKeySource(issuer, path: path))
                }
            } catch let error as ConfigError {
                errors.append(error)
                continue
            } catch let error as KeyLoadError {
                errors.append(ConfigError(.invalidValue, path: path, error.message))
                continue
            } catch {
                errors.append(ConfigError(.invalidValue, path: path, "\(error)"))
                continue
            }
            let audiences = issuer.audiences ?? configuration.auth.audiences
            policies.append(
                IssuerPolicy(
                    issuer: issuer.issuer, keys: keys, algorithms: algorithms, audiences: audiences,
                    tokenTypes: issuer.tokenTypes, requiredClaims: issuer.requiredClaims))
        }
        guard errors.isEmpty else { throw ConfigErrors(errors) }
        let verifier = TokenVerifier(issuers: policies, leeway: Double(configuration.auth.leewaySeconds))
        return Loaded(verifier: verifier, policies: policies, remote: remote, warnings: warnings)
    }

    /// A single configured key is pinned to exactly one algorithm (RFC 8725 §3.1), so its issuer lists exactly one.
    private static func single(_ algorithms: Set<JWSAlgorithm>, path: String, source: String) throws(ConfigError) -> JWSAlgorithm {
        guard algorithms.count == 1, let alg = algorithms.first else {
            throw ConfigError(
                .invalidValue, path: "\(path).algorithms", "a \(source) key is pinned to exactly one algorithm; list exactly one")
        }
        return alg
    }

    private static func read(_ file: String, path: String) throws(ConfigError) -> [UInt8] {
        do {
            return try GatewayConfiguration.readReferencedFile(file)
        } catch {
            throw ConfigError(.unreadableFile, path: path, error.message)
        }
    }

    /// A secret file holds the raw secret; one trailing newline (as editors write) is not part of it.
    private static func readSecret(_ file: String, path: String) throws(ConfigError) -> [UInt8] {
        var bytes = try read(file, path: path)
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard bytes.count >= 32 else { throw ConfigError(.invalidValue, path: path, "the secret must be at least 32 bytes long") }
        return bytes
    }
}
