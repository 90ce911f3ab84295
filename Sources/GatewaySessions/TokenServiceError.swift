import GatewayJSON

/// A token-endpoint error (RFC 6749 §5.2): `error` is the RFC code clients act on, `reason` the finer stable code for
/// logs and metrics, `errorDescription` a fixed sentence (never a token, password or stored value).
public struct TokenServiceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// RFC 6749 / RFC 7009 `error` code.
    public var error: String
    /// Stable reason: equal to `error` or more precise (`refresh_token_reused`, `session_expired`, ...).
    public var reason: String
    public var errorDescription: String
    public var status: Int
    /// Seconds, for 429 and 503 answers.
    public var retryAfter: Int?

    public init(error: String, reason: String? = nil, description: String, status: Int = 400, retryAfter: Int? = nil) {
        self.error = error
        self.reason = reason ?? error
        self.errorDescription = description
        self.status = status
        self.retryAfter = retryAfter
    }

    public var description: String { "\(reason): \(errorDescription)" }

    /// The JSON body: `{"error", "error_description", "reason"}` and `request_id` when there is one.
    public func body(requestID: String?) -> [UInt8] {
        var object = JSONObject([("error", .string(error)), ("error_description", .string(errorDescription)), ("reason", .string(reason))])
        if let requestID { object["request_id"] = .string(requestID) }
        return Array((JSONWriter.string(.object(object)) + "\n").utf8)
    }

    public static func invalidRequest(_ description: String) -> TokenServiceError {
        TokenServiceError(error: "invalid_request", description: description)
    }

    /// Wrong username or password. One answer for both (DESIGN §7); `status` is 401 on `/auth/login`, 400 on the
    /// password grant (RFC 6749 §5.2).
    public static func badCredentials(status: Int) -> TokenServiceError {
        TokenServiceError(
            error: "invalid_grant", reason: "invalid_credentials", description: "The username or password is incorrect", status: status)
    }

    public static func invalidGrant(_ reason: String, _ description: String) -> TokenServiceError {
        TokenServiceError(error: "invalid_grant", reason: reason, description: description)
    }

    public static let invalidScope = TokenServiceError(
        error: "invalid_scope", description: "The requested scope exceeds the scope granted")

    public static let unsupportedGrantType = TokenServiceError(
        error: "unsupported_grant_type", description: "grant_type must be password or refresh_token")

    public static func tooManyRequests(retryAfter: Int) -> TokenServiceError {
        TokenServiceError(
            error: "too_many_requests", reason: "login_rate_limited", description: "Too many failed logins; try again later",
            status: 429, retryAfter: retryAfter)
    }

    public static let busy = TokenServiceError(
        error: "temporarily_unavailable", reason: "credential_check_busy", description: "Too many logins in progress; try again shortly",
        status: 503, retryAfter: 1)

    public static let serverError = TokenServiceError(
        error: "server_error", description: "The token service failed to complete the request", status: 500)

    /// The session store cannot be reached (DESIGN §9): the request may be retried.
    public static let storeUnavailable = TokenServiceError(
        error: "temporarily_unavailable", reason: "store_unavailable",
        description: "The session store is unavailable; try again shortly", status: 503, retryAfter: 2)

    /// What a failed store call means for the client: 503 when the store is unreachable, else 500.
    public static func storeFailure(_ error: any Error) -> TokenServiceError {
        error is SessionStoreError ? .storeUnavailable : .serverError
    }

    public static let loginUpstreamFailed = TokenServiceError(
        error: "temporarily_unavailable", reason: "login_upstream_unavailable",
        description: "The credential check could not be completed", status: 503, retryAfter: 1)
}
