/// A remote key set's counters: what `portcullis_jwks_fetches_total{issuer,result}` and a key-set age gauge report.
public struct KeySetStatus: Sendable {
    public var issuer: String
    /// A fetch has succeeded at least once.
    public var loaded: Bool
    public var keyCount: Int
    public var fetchesSucceeded: Int
    /// Failed fetches by `KeySetFetchError.Code`.
    public var fetchesFailed: [String: Int]
    /// Seconds since the last successful fetch (nil: none yet).
    public var ageSeconds: Double?

    package init(
        issuer: String, loaded: Bool, keyCount: Int, fetchesSucceeded: Int, fetchesFailed: [String: Int], ageSeconds: Double?
    ) {
        self.issuer = issuer
        self.loaded = loaded
        self.keyCount = keyCount
        self.fetchesSucceeded = fetchesSucceeded
        self.fetchesFailed = fetchesFailed
        self.ageSeconds = ageSeconds
    }
}
