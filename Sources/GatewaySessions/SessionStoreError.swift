/// A session store that cannot answer right now (DESIGN §9 "Database down"): the database is unreachable, refused
/// the connection or did not answer within the store's deadline. The token endpoints answer it with 503
/// `temporarily_unavailable` and `Retry-After`, not 500: the request was fine and may be retried.
public struct SessionStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Stable codes, for logs and tests.
    public enum Code: String, Sendable, Hashable {
        /// No connection to the store could be had, or it broke during the call.
        case unavailable
        /// The store did not answer within its deadline.
        case timedOut = "timed_out"
    }

    public var code: Code
    /// A sentence for the log; never a password, token or stored value.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
