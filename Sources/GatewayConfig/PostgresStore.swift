/// `store` with `type: postgres` (DESIGN §9): the database a fleet of gateways shares, from a libpq-style URI plus a
/// password kept out of it (so the URI can sit in a ConfigMap and the password in a Secret).
///
/// The description never shows the password.
public struct PostgresStore: Sendable, Hashable, CustomStringConvertible {
    /// `sslmode` of the URI. Only the three modes that mean something definite: libpq's `prefer` and `allow`
    /// silently fall back to plaintext, and `verify-ca` skips the host name check.
    public enum SSLMode: String, Sendable, Hashable, CaseIterable {
        /// No TLS (loopback, unix sockets, a private network you trust).
        case disable
        /// TLS without verifying the server's certificate: encrypted, but open to an active attacker.
        case require
        /// TLS, certificate verified against `ca_file` (or the system roots) and the host name checked.
        case verifyFull = "verify-full"
    }

    /// Where the password comes from; read when the store is opened (`password_file` names a file).
    public enum Password: Sendable, Hashable, CustomStringConvertible {
        case value(String)
        case file(String)

        public var description: String {
            switch self {
            case .value: "<password>"
            case .file(let path): "<password from \(path)>"
            }
        }
    }

    /// The URI as written (it holds no password: one in the URI is refused).
    public var url: String
    public var user: String
    /// A host name or an IP address (IPv6 without brackets); a path (starting with `/`) is the directory of the
    /// server's unix socket, as in libpq.
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode
    public var password: Password?
    /// Trust roots (PEM) for `verify-full`, resolved against the configuration's folder; nil: the system's.
    public var caFile: String?
    /// Connections each process keeps to the database at most.
    public var poolSize = 4
    /// The deadline of every store call and connection attempt: past it, the token endpoints answer 503.
    public var connectTimeoutMilliseconds = 2000

    public init(url: String, user: String, host: String, port: Int, database: String, sslMode: SSLMode) {
        self.url = url
        self.user = user
        self.host = host
        self.port = port
        self.database = database
        self.sslMode = sslMode
    }

    /// Whether `host` names a unix socket directory.
    public var isUnixSocket: Bool { host.hasPrefix("/") }

    public var description: String {
        "postgres store \(url) (password: \(password.map { "\($0)" } ?? "none"), pool \(poolSize), deadline \(connectTimeoutMilliseconds) ms)"
    }
}
