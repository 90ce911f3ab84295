import NIOConcurrencyHelpers

/// The one answer a waiting caller gets from several sources that race (the call's own result, its deadline, the
/// caller's cancellation): the first `finish` wins and later ones are ignored, whether `value` is awaited before or
/// after it.
final class CallOutcome<Value: Sendable>: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<Value, any Error>)
        case finished(Result<Value, any Error>)
        case delivered
    }

    private let state = NIOLockedValueBox(State.pending)

    /// The first result `finish` was given; waits for it.
    var value: Value {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLockedValue { state -> Result<Value, any Error>? in
                    switch state {
                    case .pending:
                        state = .waiting(continuation)
                        return nil
                    case .finished(let result):
                        state = .delivered
                        return result
                    case .waiting, .delivered:
                        preconditionFailure("CallOutcome.value awaited twice")
                    }
                }
                if let ready { continuation.resume(with: ready) }
            }
        }
    }

    func finish(_ result: Result<Value, any Error>) {
        let waiting = state.withLockedValue { state -> CheckedContinuation<Value, any Error>? in
            switch state {
            case .pending:
                state = .finished(result)
                return nil
            case .waiting(let continuation):
                state = .delivered
                return continuation
            case .finished, .delivered:
                return nil
            }
        }
        waiting?.resume(with: result)
    }
}
