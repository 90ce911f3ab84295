import NIOCore

/// The two connection clocks of DESIGN §5, counted per request head: once the first byte of a head has arrived, the
/// whole head must arrive within `header_timeout_ms` (else 408 and close — the slowloris defence); a kept-alive
/// connection with no request is closed silently after `idle_timeout_ms`. No clock runs while a request is being
/// answered or its body is arriving, and several pipelined requests count as several.
///
/// A value type that owns the deadlines and returns what to do; `IdleConnectionHandler` feeds it the events (bytes
/// arrived, a head or message end decoded, a response ended, a timer fired) and keeps at most one scheduled task
/// per clock. Every ordering is unit-tested without I/O or real time.
public struct ConnectionClocks: Sendable {
    public enum Action: Sendable, Equatable {
        case none
        /// Make sure a task fires at (or before) this deadline and then calls `headerTimerFired`.
        case scheduleHeaderTimer(NIODeadline)
        /// The head arrived: the header task is no longer needed.
        case cancelHeaderTimer
        /// Make sure a task fires at (or before) this deadline and then calls `idleTimerFired`. An earlier task
        /// may stay: it is asked again when it fires (moving one task costs less than one per request).
        case scheduleIdleTimer(NIODeadline)
        /// Answer 408 and close.
        case timeOutHead
        /// Close silently.
        case closeIdle
    }

    public let headerTimeout: TimeAmount
    public let idleTimeout: TimeAmount
    /// The decoder is between messages: the next byte belongs to a request head.
    private(set) var awaitingHead = true
    /// Bytes of a request head arrived and the decoder has not produced that head yet.
    private(set) var headPending = false
    /// Request heads decoded whose response has not ended yet (pipelined ones included).
    private(set) var outstanding = 0
    private(set) var headerDeadline: NIODeadline?
    private(set) var idleDeadline: NIODeadline?

    public init(headerTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    /// Whether the responses to every decoded request have ended (a 408 may then be written).
    public var isBetweenResponses: Bool { outstanding == 0 }

    /// The connection is open: nothing has arrived yet.
    public mutating func connectionStarted(now: NIODeadline) -> Action {
        armIdle(now: now)
    }

    /// Bytes arrived, before the decoder sees them.
    public mutating func bytesArrived() {
        guard awaitingHead else { return }
        headPending = true
        idleDeadline = nil
    }

    /// The decoder processed a read. Most heads arrive in one read and were decoded just now; the header clock is
    /// armed only for those that did not. (A read that ends one message and starts the next head leaves
    /// `headPending` false: the decoder does not say how far it got, so that head's clock starts with its next
    /// read, at most one read late.)
    /// (`now` is only read when the clock is armed: this runs for every read.)
    public mutating func readDecoded(now: @autoclosure () -> NIODeadline) -> Action {
        guard headPending, awaitingHead, outstanding == 0, headerDeadline == nil else { return .none }
        return armHeader(now: now())
    }

    public mutating func headDecoded() -> Action {
        awaitingHead = false
        headPending = false
        outstanding += 1
        guard headerDeadline != nil else { return .none }
        headerDeadline = nil
        return .cancelHeaderTimer
    }

    public mutating func messageDecoded() {
        awaitingHead = true
    }

    public mutating func responseEnded(now: NIODeadline) -> Action {
        outstanding = max(0, outstanding - 1)
        guard outstanding == 0, awaitingHead else { return .none }
        if headPending {
            // Bytes of the next head arrived while a response was outstanding, when nobody read further: its clock
            // starts now, not when its first byte came (the gateway, not the client, held it back).
            return headerDeadline == nil ? armHeader(now: now) : .none
        }
        return armIdle(now: now)
    }

    public mutating func headerTimerFired(now: NIODeadline) -> Action {
        guard let deadline = headerDeadline else { return .none }
        guard deadline <= now else { return .scheduleHeaderTimer(deadline) }
        headerDeadline = nil
        // Only between responses: a 408 must never land inside another answer.
        return headPending && awaitingHead && outstanding == 0 ? .timeOutHead : .none
    }

    public mutating func idleTimerFired(now: NIODeadline) -> Action {
        // No deadline: a request started since (its own clocks apply; the next response end re-arms this one).
        guard let deadline = idleDeadline, outstanding == 0, awaitingHead, !headPending else { return .none }
        return deadline <= now ? .closeIdle : .scheduleIdleTimer(deadline)
    }

    private mutating func armHeader(now: NIODeadline) -> Action {
        let deadline = now + headerTimeout
        headerDeadline = deadline
        return .scheduleHeaderTimer(deadline)
    }

    private mutating func armIdle(now: NIODeadline) -> Action {
        let deadline = now + idleTimeout
        idleDeadline = deadline
        return .scheduleIdleTimer(deadline)
    }
}
