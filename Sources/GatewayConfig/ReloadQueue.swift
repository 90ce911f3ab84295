/// Runs configuration reloads one at a time, the latest request winning.
///
/// A reload reads the file, builds the new generation (which can take seconds: a large users file, key files) and
/// only then installs it. Run concurrently, an older reload that builds slowly would install *after* a newer one and
/// the gateway would end up serving the older file. So at most one run is in progress; requests that arrive during
/// it are coalesced into exactly one more run, started after the current one finished, which reads the file as it
/// is then, so the newest edit is what ends up installed. A burst of N requests costs at most two runs.
///
/// Kept free of I/O (the work is a closure) so the ordering can be tested on its own.
public actor ReloadQueue<Outcome: Sendable> {
    private var running = false
    /// Reasons and callers of the requests that arrived while a run was in progress: served by one more run.
    private var pendingReasons: [String] = []
    private var pendingWaiters: [CheckedContinuation<Outcome, Never>] = []

    public init() {}

    /// Runs `work` now, or, when a run is in progress, waits for the one coalesced run that follows it and returns
    /// that run's outcome. `work` gets the reason (the coalesced requests' reasons, comma-joined).
    public func run(reason: String, _ work: @Sendable (String) async -> Outcome) async -> Outcome {
        if running {
            return await withCheckedContinuation { continuation in
                pendingReasons.append(reason)
                pendingWaiters.append(continuation)
            }
        }
        running = true
        let outcome = await work(reason)
        // Requests that came in meanwhile may have seen an older file or none of their edit: one more run each
        // time, until a run finishes with nobody waiting.
        while !pendingWaiters.isEmpty {
            let reasons = pendingReasons
            let waiters = pendingWaiters
            pendingReasons = []
            pendingWaiters = []
            let next = await work(Self.uniqued(reasons).joined(separator: ", "))
            for waiter in waiters { waiter.resume(returning: next) }
        }
        running = false
        return outcome
    }

    private static func uniqued(_ reasons: [String]) -> [String] {
        var seen: Set<String> = []
        return reasons.filter { seen.insert($0).inserted }
    }
}
