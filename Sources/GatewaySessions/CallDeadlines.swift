import NIOConcurrencyHelpers

/// Deadlines for many short calls at once, without a timer per call: each call adds an entry with its deadline and
/// removes it when it ends; while any entry is in, one task wakes every `tick` and runs the expiry of those past
/// their deadline (so a deadline fires up to `tick` late). Nothing runs while no call is in flight.
final class CallDeadlines: Sendable {
    /// One call's deadline, to `remove` when the call ends.
    struct Entry: Sendable {
        fileprivate let id: UInt64
        fileprivate let deadline: ContinuousClock.Instant
        fileprivate let expire: @Sendable () -> Void
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var lastID: UInt64 = 0
        var sweeping = false
    }

    let tick: Duration
    private let state = NIOLockedValueBox(State())

    init(tick: Duration = .milliseconds(50)) {
        self.tick = tick
    }

    /// Adds a deadline `duration` from now; `expire` runs (on the sweeping task) if it passes before `remove`.
    func add(after duration: Duration, expire: @escaping @Sendable () -> Void) -> Entry {
        let deadline = ContinuousClock.now + duration
        let (entry, startSweep) = state.withLockedValue { state -> (Entry, Bool) in
            state.lastID &+= 1
            let entry = Entry(id: state.lastID, deadline: deadline, expire: expire)
            state.entries[entry.id] = entry
            let start = !state.sweeping
            state.sweeping = true
            return (entry, start)
        }
        if startSweep { Task { await self.sweep() } }
        return entry
    }

    func remove(_ entry: Entry) {
        state.withLockedValue { _ = $0.entries.removeValue(forKey: entry.id) }
    }

    /// Runs `body` in a task of its own and answers with whichever comes first: its result; `timedOut()` once
    /// `duration` has passed (`onExpiry` runs then and the task is cancelled); `CancellationError` when the caller is
    /// cancelled. The caller is answered at once, even while `body` has not noticed its cancellation yet; it then
    /// ends on its own, its result dropped.
    func run<T: Sendable>(
        within duration: Duration, timedOut: @escaping @Sendable () -> any Error, onExpiry: @escaping @Sendable () -> Void = {},
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let outcome = CallOutcome<T>()
        let work = Task {
            do {
                outcome.finish(.success(try await body()))
            } catch {
                outcome.finish(.failure(error))
            }
        }
        let entry = add(after: duration) {
            onExpiry()
            work.cancel()
            outcome.finish(.failure(timedOut()))
        }
        defer { remove(entry) }
        return try await withTaskCancellationHandler {
            try await outcome.value
        } onCancel: {
            work.cancel()
            outcome.finish(.failure(CancellationError()))
        }
    }

    /// How many calls have a deadline now (tests).
    var count: Int { state.withLockedValue { $0.entries.count } }

    private func sweep() async {
        while true {
            try? await Task.sleep(for: tick)
            let now = ContinuousClock.now
            let (due, done) = state.withLockedValue { state -> ([Entry], Bool) in
                let due = state.entries.values.filter { $0.deadline <= now }
                for entry in due { state.entries.removeValue(forKey: entry.id) }
                // The sweep ends with the last entry; the next `add` starts another (decided under the same lock).
                if state.entries.isEmpty { state.sweeping = false }
                return (due, !state.sweeping)
            }
            for entry in due { entry.expire() }
            if done { return }
        }
    }
}
