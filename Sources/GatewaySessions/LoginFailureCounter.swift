/// Where failed logins are counted (DESIGN §7): per username and per client address within a sliding window,
/// checked before the password. `LoginRateLimiter` counts in this process (sqlite and memory stores);
/// `PostgresLoginFailureCounter` counts in the shared database, so a fleet of 50 replicas allows the same number of
/// guesses as one.
///
/// A counter that cannot answer throws (a `SessionStoreError` when its database is down): the token service then
/// answers 503 rather than letting a guess through uncounted.
public protocol LoginFailureCounter: Sendable {
    var limits: LoginRateLimiter.Limits { get }

    /// nil when a login may be tried now, else the seconds until it may (for `Retry-After`, at least 1).
    func retryAfter(username: String, address: String?, now: Double) async throws -> Int?

    /// Counts a failed login against the username and the address.
    func recordFailure(username: String, address: String?, now: Double) async throws

    /// A success clears its username's failures (only the real user can produce one), not its address's.
    func recordSuccess(username: String) async throws
}

extension LoginRateLimiter: LoginFailureCounter {}
