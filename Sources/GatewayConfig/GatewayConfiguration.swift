/// The whole of `gateway.json`, validated, with every default filled in and every relative path resolved against
/// the configuration file's folder.
public struct GatewayConfiguration: Sendable {
    public var listen: ListenAddress
    public var adminListen: ListenAddress?
    /// TLS on the data listener (DESIGN §11); nil: cleartext (HTTP/1.1 and HTTP/2 by prior knowledge).
    public var tls: ListenerTLS?
    public var limits: Limits
    /// Upstreams by name, in document order.
    public var upstreams: [Upstream]
    public var routes: [Route]
    public var auth: Auth
    public var issuers: [Issuer]
    public var identityHeaders: IdentityHeaders
    public var tokenService: TokenService?
    public var store: Store
    public var log: Log
    /// Folder of the configuration file; relative paths were resolved against it.
    public var baseDirectory: String

    public func upstream(named name: String) -> Upstream? {
        upstreams.first { $0.name == name }
    }
}

/// A `host:port` to listen on.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether only this host can connect (`localhost`, `::1`, 127.x.x.x).
    public var isLoopback: Bool { isLoopbackHost(host) }
}

public struct Limits: Sendable, Hashable {
    public var maxHeaderBytes = 16384
    public var maxBodyBytes: Int64 = 104_857_600
    public var headerTimeoutMs = 10_000
    public var idleTimeoutMs = 60_000
    public var maxConnections = 10_000
    public var drainSeconds = 10
    /// A WebSocket tunnel with no bytes either way for this long is closed (1001 both ways).
    public var websocketIdleTimeoutMs = 300_000
    /// After the gateway sent its close frames, how long it waits for the peers' closes before closing the sockets.
    public var websocketCloseTimeoutMs = 1000
    /// Streams one HTTP/2 connection may have open at once (the `SETTINGS_MAX_CONCURRENT_STREAMS` advertised).
    public var maxConcurrentStreams = 100
    public init() {}

    /// The `SETTINGS_MAX_HEADER_LIST_SIZE` advertised on HTTP/2 connections. HPACK counts 32 bytes per field on top
    /// of its name and value, and a block over the advertised size is a connection error (GOAWAY) rather than one
    /// stream's 431, so the gateway advertises twice `max_header_bytes` and checks each stream's head against
    /// `max_header_bytes` itself, answering that stream alone.
    public var http2HeaderListSize: Int { maxHeaderBytes * 2 }
}

public struct Upstream: Sendable, Hashable {
    public var name: String
    /// `http` or `https`.
    public var scheme: String
    public var host: String
    public var port: Int
    /// Path prefix from the URL, without a trailing slash ("" when the URL has no path).
    public var basePath: String
    public var unixSocket: String?
    public var connectTimeoutMs = 2000
    public var timeoutMs = 30_000
    public var idleTimeoutMs = 60_000
    public var tls = UpstreamTLS()
    /// `http_version`: which HTTP the gateway speaks to this upstream.
    public var httpVersion = HTTPVersion.http1_1
    /// True for the built-in demo upstream that the gateway starts itself when no upstream is configured.
    public var isEmbeddedDemo = false

    /// An upstream's `http_version`.
    public enum HTTPVersion: String, Sendable, Hashable, CaseIterable {
        /// `"1.1"` (default): HTTP/1.1 only.
        case http1_1 = "1.1"
        /// `"2"`: HTTP/2 when ALPN agrees over https, else HTTP/1.1.
        case http2 = "2"
        /// `"h2c"`: HTTP/2 with prior knowledge over cleartext.
        case h2c = "h2c"

        /// Whether requests to the upstream may go out as HTTP/2.
        public var allowsHTTP2: Bool { self != .http1_1 }
    }

    /// `scheme://host:port`, as libcurl wants it.
    public var origin: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h):\(port)"
    }
}

public struct UpstreamTLS: Sendable, Hashable {
    public var caFile: String?
    public var clientCertFile: String?
    public var clientKeyFile: String?
    public init() {}
}

public struct Route: Sendable, Hashable {
    public enum AuthMode: String, Sendable, Hashable { case required, optional, none }

    /// Canonical path prefix, matched on segment boundaries.
    public var pathPrefix: String
    /// Upper-case methods; empty means any.
    public var methods: [String]
    /// Lower-cased host (without port) to match, or nil for any.
    public var host: String?
    public var upstream: String
    public var auth: AuthMode
    public var scopes: [String]
    public var stripPrefix: Bool
    /// Whether `Upgrade: websocket` requests are tunnelled (false: refused with 400 `websocket_not_allowed`).
    public var websocket: Bool

    public init(
        pathPrefix: String, methods: [String], host: String?, upstream: String, auth: AuthMode, scopes: [String], stripPrefix: Bool,
        websocket: Bool = true
    ) {
        self.pathPrefix = pathPrefix
        self.methods = methods
        self.host = host
        self.upstream = upstream
        self.auth = auth
        self.scopes = scopes
        self.stripPrefix = stripPrefix
        self.websocket = websocket
    }
}

public struct Auth: Sendable, Hashable {
    public var realm = "api"
    public var audiences = ["api"]
    public var leewaySeconds = 30
    public var forwardToken = false
    public var tokenCacheEntries = 65536
    public init() {}
}

public struct Issuer: Sendable, Hashable {
    public enum KeySource: Sendable, Hashable {
        case jwksURI(String)
        case discovery
        case jwksFile(String)
        case publicKeyFile(String)
        case hmacSecret(String)
        case hmacSecretFile(String)
    }

    public var issuer: String
    public var keySource: KeySource
    /// Allow-list of JWS algorithm names, validated against the supported set.
    public var algorithms: [String]
    /// Overrides `auth.audiences` when set.
    public var audiences: [String]?
    public var tokenTypes: [String]
    public var requiredClaims: [String]
    /// Key id for a single configured key (PEM or HMAC secret).
    public var kid: String?
    /// Remote key sets only (`jwks_uri`, `discovery`): CA bundle for the key set's and metadata's TLS.
    public var caFile: String?
    /// Remote key sets only: an unknown `kid` triggers at most one refetch per this many seconds.
    public var jwksRefetchCooldownSeconds = 10
    /// Remote key sets only: bounds on the refresh interval taken from the response's `Cache-Control: max-age`
    /// (without one, the maximum applies).
    public var jwksMinRefreshSeconds = 60
    public var jwksMaxRefreshSeconds = 900
    /// Remote key sets only: how long keys stay in use past their freshness while refetching fails; then they are
    /// dropped (fail closed).
    public var jwksMaxStaleSeconds = 86400
    /// Remote key sets only: bound on one whole fetch (metadata and key set), connect to last byte.
    public var jwksFetchTimeoutMs = 5000
    /// The issuer's revocation feed (`GET <path_prefix>/revocations` of a Portcullis token service, DESIGN §9):
    /// followed so that the data path refuses this issuer's revoked sessions. http(s); https unless loopback.
    public var revocationsURI: String? = nil
    /// The feed's shared secret, sent as `Authorization: Bearer`; set exactly when `revocationsURI` is.
    public var revocationsToken: String? = nil

    /// The key set is fetched over the network (`jwks_uri` or `discovery`).
    public var isRemote: Bool {
        switch keySource {
        case .jwksURI, .discovery: true
        default: false
        }
    }
}

public struct IdentityHeaders: Sendable, Hashable {
    public var subject = "X-Auth-Subject"
    public var scopes = "X-Auth-Scopes"
    public var issuer = "X-Auth-Issuer"
    /// Claim name → header name, in document order.
    public var claims: [ClaimHeader] = []
    /// The verified client certificate's subject (RFC 4514 form) on mTLS connections (`tls.client_ca_file`).
    public var clientCertSubject = "X-Auth-Client-Cert-Subject"
    /// Every client header whose normalised name starts with this is dropped.
    public var stripPrefix = "X-Auth-"
    public init() {}

    public struct ClaimHeader: Sendable, Hashable {
        public var claim: String
        public var header: String

        public init(claim: String, header: String) {
            self.claim = claim
            self.header = header
        }
    }
}

public struct TokenService: Sendable, Hashable {
    public var pathPrefix = "/auth"
    public var issuer = "http://localhost:8080"
    public var audience = "api"
    public var accessTokenTTLSeconds = 900
    public var refreshTokenTTLSeconds = 604_800
    public var refreshTokenIdleTTLSeconds = 86400
    public var refreshReuseGraceSeconds = 10
    public var signingAlgorithm = "ES256"
    public var keyDirectory: String
    /// Seals the signing keys kept in a shared (postgres) store (`signing.key_encryption_key` or
    /// `signing.key_encryption_key_file`, DESIGN §9).
    public var keyEncryptionKey: SealingSecret?
    /// How long a key added to a shared store is published before it signs (`signing.activation_delay_seconds`).
    public var activationDelaySeconds = 60
    public var usersFile: String?
    public var loginUpstream: LoginUpstream?
    /// The bearer secret `POST /introspect` on the admin listener requires (≥ 32 bytes). Without one, introspection
    /// is only served on a loopback admin listener.
    public var introspectionToken: String?
    /// Failed logins allowed per username and per client address within `window_seconds`, checked before the
    /// password (DESIGN §7).
    public var loginLimits = LoginLimits()
    /// Shared secret of the revocation feed `GET <path_prefix>/revocations` (≥ 32 bytes); nil: the feed is off (404).
    public var revocationsFeedToken: String? = nil

    public struct LoginLimits: Sendable, Hashable {
        public var perUsername = 5
        public var perAddress = 20
        public var windowSeconds = 60
    }

    /// A secret given inline (usually `${ENV}`) or as a file. Its description never shows the value.
    public enum SealingSecret: Sendable, Hashable, CustomStringConvertible {
        case value(String)
        case file(String)

        public var description: String {
            switch self {
            case .value: "<secret>"
            case .file(let path): "<secret from \(path)>"
            }
        }

        /// The secret's bytes (a file's without its trailing newline); at least 32. Errors name `path`.
        public func bytes(path: String) throws(ConfigErrors) -> [UInt8] {
            var bytes: [UInt8]
            switch self {
            case .value(let value):
                bytes = Array(value.utf8)
            case .file(let file):
                do {
                    bytes = try GatewayConfiguration.readReferencedFile(file)
                } catch {
                    throw ConfigErrors([ConfigError(.unreadableFile, path: path + "_file", error.message)])
                }
                while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
            }
            guard bytes.count >= 32 else {
                throw ConfigErrors([ConfigError(.invalidValue, path: path, "must be at least 32 bytes long")])
            }
            return bytes
        }
    }

    public struct LoginUpstream: Sendable, Hashable {
        public var upstream: String
        public var path: String
    }
}

public struct Store: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable { case sqlite, memory, postgres }
    public var kind: Kind = .sqlite
    /// The SQLite file (`type: sqlite`).
    public var path: String
    /// The database and how to reach it (`type: postgres`, DESIGN §9); nil for the other kinds.
    public var postgres: PostgresStore?
}

public struct Log: Sendable, Hashable {
    public enum Level: String, Sendable, Hashable, CaseIterable { case trace, debug, info, notice, warning, error, critical }
    public enum Format: String, Sendable, Hashable { case json, text }
    public var level: Level = .info
    public var format: Format = .json
    public var accessLog = true
    public init() {}
}
