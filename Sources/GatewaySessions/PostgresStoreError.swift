import PostgresNIO

/// A PostgreSQL store problem that is not an outage: a statement the server refused, a row of an unexpected shape, a
/// schema from a newer build, a TLS setup that cannot work. (An unreachable or unresponsive database is a
/// `SessionStoreError`, answered 503.) Messages carry the server's message and SQLSTATE, never a password or a
/// stored value.
public struct PostgresStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Stable codes, for logs and tests.
    public enum Code: String, Sendable, Hashable {
        /// The server refused a statement (the message carries its SQLSTATE).
        case query = "postgres_query"
        /// A row did not have the expected columns.
        case malformed = "postgres_malformed"
        /// The database was migrated by a newer Portcullis.
        case schemaTooNew = "postgres_schema_too_new"
        /// TLS cannot be set up (an unreadable or invalid `ca_file`).
        case tls = "postgres_tls"
        /// The store was closed.
        case closed = "postgres_closed"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// What a postgres-nio error means for the caller: a `SessionStoreError` when the database cannot be reached or
    /// used right now (connection failures, authentication, the server shutting down or out of connections), else a
    /// `PostgresStoreError(.query)`. `what` names the operation for the message.
    static func map(_ error: any Error, _ what: String) -> any Error {
        switch error {
        case is SessionStoreError, is PostgresStoreError, is CancellationError:
            return error
        case let error as PSQLError:
            if error.code == .server {
                let state = error.serverInfo?[.sqlState] ?? "?????"
                let message = error.serverInfo?[.message] ?? "error"
                let text = "\(what): the database answered \(message) (SQLSTATE \(state))"
                // 08: connection exception; 28: invalid authorization (a changed password); 3D000: no such
                // database; 53: insufficient resources (too many connections); 57P0x: the server is shutting down
                // or starting up. All are about reaching the database, not about the statement.
                if ["08", "28", "3D", "53", "57P"].contains(where: state.hasPrefix) {
                    return SessionStoreError(.unavailable, text)
                }
                return PostgresStoreError(.query, text)
            }
            // Anything else postgres-nio reports is about the connection: refused, closed, TLS, SASL.
            let cause = error.underlying.map { ": \($0)" } ?? ""
            return SessionStoreError(.unavailable, "\(what): no usable database connection (\(error.code))\(cause)")
        case let error as PostgresDecodingError:
            return PostgresStoreError(.malformed, "\(what): a column had an unexpected type (\(error.code))")
        default:
            // The pool's own errors (ConnectionPoolError: circuit breaker, shutdown) and NIO's connect errors.
            return SessionStoreError(.unavailable, "\(what): no usable database connection (\(error))")
        }
    }
}
