/// When to fetch a remote key set (JWKS) again, as a value type that takes events with the current time and returns
/// what to do, so every schedule can be unit-tested without I/O or clocks. The caller owns the fetching, the timer
/// and the keys; times are seconds on a monotonic clock.
///
/// The rules (DESIGN §4 issuers; README "remote key sets"):
/// - **Prefetch**: `start` asks for the first fetch at once.
/// - **Refresh**: after a successful fetch the keys are fresh for the document's `Cache-Control: max-age` (minus
///   `Age`), clamped to `[minRefresh, maxRefresh]`, or `maxRefresh` without one; the next fetch is due then.
/// - **Single flight**: at most one fetch runs at a time; whoever needs keys meanwhile joins it.
/// - **Unknown kid**: a token naming a key the set lacks may trigger a fetch at most once per `refetchCooldown`
///   (counted from the start of the previous fetch of any kind), so a flood of random kids costs at most one fetch
///   per cooldown; within the cooldown the token is refused at once.
/// - **Errors**: a failed fetch keeps the keys (stale-while-error) and is retried after 1 s, 2 s, 4 s, … up to
///   `maxRetry`; keys that stay stale longer than `maxStale` past their freshness are dropped (fail closed) — by the
///   failure that finds them past that limit, or by the timer when no fetch is due then. A running fetch always
///   gets to finish first (it is bounded by the fetch timeout), so a refresh that succeeds never drops keys.
public struct KeySetRefreshState: Sendable, Equatable {
    public struct Settings: Sendable, Equatable {
        public var minRefresh: Double
        public var maxRefresh: Double
        public var refetchCooldown: Double
        public var maxStale: Double
        /// First retry delay after a failure; doubles per consecutive failure.
        public var initialRetry: Double
        /// Longest retry delay (never beyond `maxRefresh`).
        public var maxRetry: Double

        public init(
            minRefresh: Double, maxRefresh: Double, refetchCooldown: Double, maxStale: Double, initialRetry: Double = 1,
            maxRetry: Double = 60
        ) {
            self.minRefresh = max(0, minRefresh)
            self.maxRefresh = max(self.minRefresh, maxRefresh)
            self.refetchCooldown = max(0, refetchCooldown)
            self.maxStale = max(0, maxStale)
            self.initialRetry = max(0, initialRetry)
            self.maxRetry = min(max(self.initialRetry, maxRetry), self.maxRefresh)
        }
    }

    /// What the caller does after an event.
    public struct Actions: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// Start a fetch (the state now counts one as running).
        public static let fetch = Actions(rawValue: 1)
        /// The keys are too stale to trust: remove them all.
        public static let dropKeys = Actions(rawValue: 2)
    }

    /// The answer to "a token names a key this set lacks".
    public enum UnknownKeyDecision: Sendable, Equatable {
        /// Start a fetch and let the request wait for it.
        case fetch
        /// A fetch is already running: wait for that one.
        case join
        /// No fetch allowed now (cooldown): refuse the token at once.
        case refuse
    }

    public let settings: Settings
    public private(set) var fetching = false
    /// Keys are loaded and not dropped for staleness.
    public private(set) var hasKeys = false
    /// A fetch has succeeded at least once (readiness).
    public private(set) var loadedOnce = false
    public private(set) var lastSuccess: Double?
    public private(set) var lastFetchStart: Double?
    /// When the current keys stop being fresh (nil before the first success).
    public private(set) var freshUntil: Double?
    /// When the next background fetch is due (meaningless while `fetching`).
    public private(set) var nextFetch: Double = 0
    public private(set) var consecutiveFailures = 0

    public init(settings: Settings) {
        self.settings = settings
    }

    /// When the keys are dropped unless a fetch succeeds before: `maxStale` after they stopped being fresh.
    public var dropDeadline: Double? {
        guard hasKeys, let freshUntil else { return nil }
        return freshUntil + settings.maxStale
    }

    /// When the caller must call `tick` next (nil: only after the running fetch completes).
    public var nextWakeup: Double? {
        guard !fetching else { return nil }
        guard let deadline = dropDeadline else { return nextFetch }
        return min(nextFetch, deadline)
    }

    /// The gateway starts: fetch now (prefetch, before readiness).
    public mutating func start(now: Double) -> Actions {
        nextFetch = now
        return tick(now: now)
    }

    /// Time passed (a timer fired): start a due fetch, or else drop keys past the staleness limit.
    public mutating func tick(now: Double) -> Actions {
        guard !fetching else { return [] }
        if now >= nextFetch {
            beginFetch(now: now)
            return .fetch
        }
        if let deadline = dropDeadline, now >= deadline {
            hasKeys = false
            return .dropKeys
        }
        return []
    }

    /// A token names a key the set lacks.
    public mutating func unknownKey(now: Double) -> UnknownKeyDecision {
        if fetching { return .join }
        if let last = lastFetchStart, now - last < settings.refetchCooldown { return .refuse }
        beginFetch(now: now)
        return .fetch
    }

    /// The running fetch delivered a usable key set. `lifetime` is the document's freshness lifetime from its
    /// cache headers (nil: none given).
    public mutating func fetchSucceeded(now: Double, lifetime: Double?) {
        fetching = false
        hasKeys = true
        loadedOnce = true
        lastSuccess = now
        consecutiveFailures = 0
        let ttl = min(max(lifetime ?? settings.maxRefresh, settings.minRefresh), settings.maxRefresh)
        freshUntil = now + ttl
        nextFetch = now + ttl
    }

    /// The running fetch failed (transport, status, size, time or an unusable document). The keys stay, unless
    /// they are now past the staleness limit.
    public mutating func fetchFailed(now: Double) -> Actions {
        fetching = false
        consecutiveFailures += 1
        nextFetch = now + retryDelay(afterFailures: consecutiveFailures)
        var actions: Actions = []
        if let deadline = dropDeadline, now >= deadline {
            hasKeys = false
            actions.insert(.dropKeys)
        }
        return actions
    }

    /// 1 s, 2 s, 4 s, … capped at `maxRetry`.
    public func retryDelay(afterFailures failures: Int) -> Double {
        guard failures > 0 else { return 0 }
        let exponent = min(failures - 1, 30)
        return min(settings.initialRetry * Double(1 << exponent), settings.maxRetry)
    }

    private mutating func beginFetch(now: Double) {
        fetching = true
        lastFetchStart = now
    }
}
