import NIOConcurrencyHelpers

/// Failed-login limits (DESIGN §7): at most `perUsername` failures per username and `perAddress` per client address
/// within a sliding window. Checked before the password is, so a locked-out guesser costs no hashing; a success
/// clears its username's failures (only the real user can produce one) but not its address's.
///
/// Memory is bounded: each key keeps at most `limit` timestamps, and keys whose failures have all left the window
/// are dropped; past `maxKeys` keys the oldest-touched half is dropped, trading precision for memory under a
/// spraying attack.
public final class LoginRateLimiter: Sendable {
    public struct Limits: Sendable, Hashable {
        public var perUsername: Int
        public var perAddress: Int
        public var window: Double

        public init(perUsername: Int = 5, perAddress: Int = 20, window: Double = 60) {
            self.perUsername = perUsername
            self.perAddress = perAddress
            self.window = window
        }
    }

    private struct Key: Hashable {
        var isAddress: Bool
        var value: String
    }

    private struct State {
        var failures: [Key: [Double]] = [:]
        var nextSweep = 0.0
    }

    public let limits: Limits
    private let maxKeys: Int
    private let state = NIOLockedValueBox(State())

    public init(limits: Limits, maxKeys: Int = 100_000) {
        self.limits = limits
        self.maxKeys = maxKeys
    }

    /// nil when a login may be tried now, else the seconds until it may (for `Retry-After`, at least 1).
    public func retryAfter(username: String, address: String?, now: Double) -> Int? {
        state.withLockedValue { state in
            var wait = 0.0
            for (key, limit) in keys(username: username, address: address) {
                guard let times = state.failures[key] else { continue }
                let recent = times.filter { $0 > now - limits.window }
                if recent.count >= limit, let oldest = recent.first {
                    wait = max(wait, oldest + limits.window - now)
                }
            }
            return wait > 0 ? max(1, Int(wait.rounded(.up))) : nil
        }
    }

    public func recordFailure(username: String, address: String?, now: Double) {
        state.withLockedValue { state in
            for (key, limit) in keys(username: username, address: address) {
                var times = state.failures[key, default: []].filter { $0 > now - limits.window }
                times.append(now)
                if times.count > limit { times.removeFirst(times.count - limit) }
                state.failures[key] = times
            }
            sweep(&state, now: now)
        }
    }

    /// How many usernames and addresses are tracked (tests, metrics).
    public var keyCount: Int { state.withLockedValue { $0.failures.count } }

    public func recordSuccess(username: String) {
        _ = state.withLockedValue { $0.failures.removeValue(forKey: Key(isAddress: false, value: username)) }
    }

    private func keys(username: String, address: String?) -> [(Key, Int)] {
        var keys = [(Key(isAddress: false, value: username), limits.perUsername)]
        if let address { keys.append((Key(isAddress: true, value: address), limits.perAddress)) }
        return keys
    }

    private func sweep(_ state: inout State, now: Double) {
        guard now >= state.nextSweep || state.failures.count > maxKeys else { return }
        state.failures = state.failures.filter { $0.value.last.map { $0 > now - limits.window } ?? false }
        if state.failures.count > maxKeys {
            let newestFirst = state.failures.sorted { ($0.value.last ?? 0) > ($1.value.last ?? 0) }
            state.failures = Dictionary(uniqueKeysWithValues: newestFirst.prefix(maxKeys / 2).map { ($0.key, $0.value) })
        }
        state.nextSweep = now + limits.window
    }
}
