import CurlNIO
import GatewayConfig
import GatewayTokens
import NIOCore

/// Where and how one issuer's key set is fetched, resolved from its configuration entry (`jwks_uri` or `discovery`).
public struct RemoteKeySource: Sendable {
    public enum Location: Sendable {
        /// The key set's URL, configured.
        case jwks(RemoteURL)
        /// The issuer's metadata documents to try in order; the key set's URL is their `jwks_uri`.
        case discovery([RemoteURL])
    }

    public var issuer: String
    /// The issuer's JSON path in the configuration (`issuers[2]`), for log lines.
    public var path: String
    public var location: Location
    /// The issuer's allow-list; each key is pinned to one of these.
    public var algorithms: Set<JWSAlgorithm>
    public var tls: CurlTLSOptions
    public var refresh: KeySetRefreshState.Settings
    /// Bound on one whole fetch (metadata and key set).
    public var fetchTimeout: TimeAmount
    /// Bound on each fetched document.
    public var maxDocumentBytes: Int

    /// Documents larger than this are refused: a key set of a few dozen keys is a few tens of KiB (a huge key set
    /// is a denial-of-service vector; the JWKS parser has the same bound).
    public static let defaultMaxDocumentBytes = 1 << 20

    init(_ issuer: Issuer, path: String) throws(ConfigError) {
        self.issuer = issuer.issuer
        self.path = path
        switch issuer.keySource {
        case .jwksURI(let text):
            guard let url = RemoteURL(text), url.isAllowedForKeys else {
                throw ConfigError(.invalidValue, path: "\(path).jwks_uri", "must be an https:// URL (http:// only to a loopback address)")
            }
            self.location = .jwks(url)
        case .discovery:
            guard let candidates = IssuerMetadata.candidates(issuer: issuer.issuer), candidates.allSatisfy(\.isAllowedForKeys) else {
                throw ConfigError(
                    .invalidValue, path: "\(path).discovery", "needs an issuer that is an https:// URL (http:// only to a loopback address)"
                )
            }
            self.location = .discovery(candidates)
        default:
            throw ConfigError(.invalidValue, path: path, "not a remote key set")
        }
        self.algorithms = Set(issuer.algorithms.compactMap(JWSAlgorithm.init(rawValue:)))
        self.tls = CurlTLSOptions(caFile: issuer.caFile)
        self.refresh = KeySetRefreshState.Settings(
            minRefresh: Double(issuer.jwksMinRefreshSeconds), maxRefresh: Double(issuer.jwksMaxRefreshSeconds),
            refetchCooldown: Double(issuer.jwksRefetchCooldownSeconds), maxStale: Double(issuer.jwksMaxStaleSeconds))
        self.fetchTimeout = .milliseconds(Int64(issuer.jwksFetchTimeoutMs))
        self.maxDocumentBytes = Self.defaultMaxDocumentBytes
    }

    /// The readiness condition this key set owns.
    var readinessName: String { "keys:\(issuer)" }
}
