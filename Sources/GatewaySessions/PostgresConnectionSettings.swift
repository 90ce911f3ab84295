import NIOCore
import PostgresNIO

/// How to reach the PostgreSQL database a fleet shares (DESIGN §9), with the password already read: what
/// `PostgresSessionStore`, `PostgresRevocationListener` and `PostgresLoginFailureCounter` connect with. Build it from
/// the decoded `store` configuration with `init(_:)` (in `PostgresConnectionSettings+Store.swift`).
///
/// The description never shows the password.
public struct PostgresConnectionSettings: Sendable, CustomStringConvertible {
    /// TLS per `sslmode`: `disable`, `require` (encrypted, unverified) or `verify-full` (chain and host name).
    public enum TLSMode: Sendable, Hashable {
        case disable
        /// Encrypted, certificate not verified.
        case require
        /// Certificate verified against `caFile` (PEM; nil: the system roots) and the host name; TLS 1.2 or later.
        case verifyFull(caFile: String?)
    }

    /// A host name or IP address, or a directory holding the server's unix socket (starts with `/`).
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// Connections each pool keeps at most.
    public var poolSize: Int
    /// The deadline of every store call and connection attempt, in milliseconds.
    public var connectTimeoutMilliseconds: Int

    public init(
        host: String, port: Int = 5432, user: String, password: String?, database: String, tls: TLSMode,
        poolSize: Int = 4, connectTimeoutMilliseconds: Int = 2000
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
        self.poolSize = poolSize
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
    }

    public var description: String {
        let at = host.hasPrefix("/") ? "\(host)/.s.PGSQL.\(port)" : (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        return "postgres \(user)@\(at)/\(database)"
    }

    /// The deadline as a `Duration`.
    var deadline: Duration { .milliseconds(connectTimeoutMilliseconds) }

    /// The error of a call (`what`) that the deadline cut short.
    func deadlinePassed(_ what: String) -> SessionStoreError {
        SessionStoreError(.timedOut, "\(what): the database did not answer within \(connectTimeoutMilliseconds) ms")
    }

    var unixSocketPath: String? { host.hasPrefix("/") ? "\(host)/.s.PGSQL.\(port)" : nil }

    /// The NIOSSL configuration for `tls`, nil for `.disable`.
    func tlsConfiguration() -> TLSConfiguration? {
        switch tls {
        case .disable:
            return nil
        case .require:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            configuration.certificateVerification = .none
            return configuration
        case .verifyFull(let caFile):
            // swift-nio-ssl's client default already verifies the chain and the host name; it allows TLS 1.0 though.
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            if let caFile { configuration.trustRoots = .file(caFile) }
            return configuration
        }
    }

    /// The pool's configuration. The TLS context is built here once (and not left to the pool, which would cache a
    /// failure such as an unreadable CA file forever), so a bad `ca_file` is reported at open.
    func clientConfiguration() throws -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socket = unixSocketPath {
            configuration = .init(unixSocketPath: socket, username: user, password: password, database: database)
        } else {
            var tls = PostgresClient.Configuration.TLS.disable
            if let t = tlsConfiguration() {
                _ = try Self.context(t)  // only to report a bad `ca_file` at open; the pool builds its own from `t`
                tls = .require(t)
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = deadline
        configuration.options.maximumConnections = max(1, poolSize)
        configuration.options.minimumConnections = 0
        // Idle connections are checked every 30 s (pool default), so a dead one is found before a request needs it.
        configuration.options.keepAliveBehavior = .init(frequency: .seconds(30))
        return configuration
    }

    /// A single connection's configuration (the listener's, the probe at open).
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        if let socket = unixSocketPath {
            configuration = .init(unixSocketPath: socket, username: user, password: password, database: database)
        } else {
            let tls: PostgresConnection.Configuration.TLS =
                if let t = tlsConfiguration() {
                    .require(try Self.context(t))
                } else {
                    .disable
                }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeoutMilliseconds))
        return configuration
    }

    /// The TLS context of `configuration`: the CA file read and parsed once, or `PostgresStoreError(.tls)`.
    private static func context(_ configuration: TLSConfiguration) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw PostgresStoreError(.tls, "cannot set up TLS for the database connection: \(error)")
        }
    }
}
