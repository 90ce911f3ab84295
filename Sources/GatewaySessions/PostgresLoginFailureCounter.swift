import Logging
import NIOConcurrencyHelpers
import PostgresNIO

/// Failed-login limits counted in the shared database (DESIGN §9 "failed-login limits (counted across replicas)"):
/// one row per failure and key in `portcullis_login_failures`, counted within the window by every replica. Same
/// answers as `LoginRateLimiter` for the same sequence of calls, whichever replicas they are made on.
///
/// Rows leave when they fall out of the window: a key's old rows on each failure recorded for it, everybody's old
/// rows at most once per window per process, and a username's rows on a success.
public final class PostgresLoginFailureCounter: LoginFailureCounter {
    public let limits: LoginRateLimiter.Limits
    let pool: PostgresPool
    private let nextSweep = NIOLockedValueBox<Double>(0)

    init(limits: LoginRateLimiter.Limits, pool: PostgresPool) {
        self.limits = limits
        self.pool = pool
    }

    public func retryAfter(username: String, address: String?, now: Double) async throws -> Int? {
        let logger = pool.logger
        let cut = now - limits.window
        let keys = Self.keys(username: username, address: address, limits: limits)
        // For each key: the `limit`-th most recent failure within the window, if there are that many. The login
        // may be tried again once it leaves the window (the in-process limiter keeps exactly the last `limit`).
        let oldest = try await pool.withConnection("login limits") { connection in
            var oldest: [Double] = []
            for (key, limit) in keys {
                for try await at in try await connection.query(
                    """
                    SELECT at FROM portcullis_login_failures WHERE key = \(key) AND at > \(cut)
                    ORDER BY at DESC OFFSET \(Int64(limit - 1)) LIMIT 1
                    """, logger: logger
                ).decode(Double.self) {
                    oldest.append(at)
                }
            }
            return oldest
        }
        let wait = oldest.map { $0 + limits.window - now }.max() ?? 0
        return wait > 0 ? max(1, Int(wait.rounded(.up))) : nil
    }

    public func recordFailure(username: String, address: String?, now: Double) async throws {
        let logger = pool.logger
        let cut = now - limits.window
        let keys = Self.keys(username: username, address: address, limits: limits).map(\.0)
        let sweep = nextSweep.withLockedValue { next in
            guard now >= next else { return false }
            next = now + limits.window
            return true
        }
        try await pool.withConnection("login limits") { connection in
            for key in keys {
                try await connection.query(
                    """
                    WITH old AS (DELETE FROM portcullis_login_failures WHERE key = \(key) AND at <= \(cut))
                    INSERT INTO portcullis_login_failures (key, at) VALUES (\(key), \(now))
                    """, logger: logger)
            }
            if sweep {
                try await connection.query("DELETE FROM portcullis_login_failures WHERE at <= \(cut)", logger: logger)
            }
        }
    }

    public func recordSuccess(username: String) async throws {
        let logger = pool.logger
        let key = "u:" + username
        try await pool.withConnection("login limits") { connection in
            _ = try await connection.query("DELETE FROM portcullis_login_failures WHERE key = \(key)", logger: logger)
        }
    }

    /// Usernames and addresses live in one column; the prefix keeps a username from counting as an address.
    private static func keys(username: String, address: String?, limits: LoginRateLimiter.Limits) -> [(String, Int)] {
        var keys = [("u:" + username, limits.perUsername)]
        if let address { keys.append(("a:" + address, limits.perAddress)) }
        return keys
    }
}

extension PostgresSessionStore {
    /// A failed-login counter in this store's database, sharing its connections.
    public func loginFailureCounter(limits: LoginRateLimiter.Limits) -> PostgresLoginFailureCounter {
        PostgresLoginFailureCounter(limits: limits, pool: pool)
    }
}
