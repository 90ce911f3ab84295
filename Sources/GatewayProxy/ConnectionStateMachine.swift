import NIOCore
import NIOHTTP1

/// What a client connection is doing, request after request, as a value type that returns actions and does no I/O,
/// so every ordering of client and upstream events can be unit-tested; `GatewayHandler` performs the actions. The
/// state says it: between requests, waiting for keys (the head and its body held), answered locally, or forwarding
/// to its target (the upstream, a local service, a local document) with the body counted against its limit. Parts
/// of pipelined requests wait in order behind the answer in hand (`admit`, `nextPending`), and the read demand says
/// whether the client may send more (not while the upload queue is full, keys are awaited, a complete request waits
/// for its answer, or requests are queued). The connection's clocks are `ConnectionClocks`, run in front of the
/// decoder (they must see pipelined heads as they are decoded).
///
/// The hard orderings it settles:
/// - the gateway answers before the client finished sending its body (a rejection, or an early upstream answer):
///   the connection must then close, because the unread body bytes cannot be told apart from the next request;
/// - the upstream fails after the response head went out: the only honest signal left is to abort the connection;
/// - the client goes away mid-transfer: the upstream transfer is cancelled.
public struct ConnectionStateMachine: Sendable {
    enum State: Sendable, Equatable {
        /// Between requests.
        case idle
        /// A request head waits for a key-set refetch; its body parts are kept (reading is held meanwhile).
        case awaitingKeys(HeldRequest)
        /// The gateway answered itself; the rest of the request body is dropped.
        case rejected(requestComplete: Bool, close: Bool)
        /// A transfer is in flight.
        case forwarding(Forwarding)
        /// The connection is being closed; nothing more happens.
        case closed
    }

    struct Forwarding: Sendable, Equatable {
        var requestComplete = false
        var responseHeadSent = false
        var keepAlive: Bool
        var target: Target = .upstream
        /// `max_body_bytes` (or the local service's limit), counted as the body arrives (chunked bodies).
        var bodyLimit: Int64 = .max
        var bodyBytes: Int64 = 0
    }

    /// Who answers a request the gateway took on.
    public enum Target: Sendable, Equatable {
        /// The upstream, through libcurl.
        case upstream
        /// A `LocalService` (token endpoints), once the whole body is collected.
        case localService
        /// A `LocalDocument`, written at once; its end waits for the request's end.
        case localDocument
    }

    /// Reading held for the upload queue or a key wait, and whether the channel asked to read meanwhile (the read
    /// is owed and issued once nothing holds it).
    struct ReadDemand: Sendable, Equatable {
        var held = false
        var requested = false
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Write the gateway's own error response; close afterwards if `close`.
        case respond(GatewayError, close: Bool)
        case startTransfer
        /// Hand body bytes to the upstream transfer.
        case forwardBody
        /// The request body is complete: tell the transfer.
        case finishUpload
        /// The local service's request is complete: ask it.
        case askLocalService
        case writeResponseHead(close: Bool)
        /// Finish the response; close afterwards if `close`.
        case writeResponseEnd(close: Bool)
        /// Abort the client connection (the response is already partly written).
        case abortConnection
        case cancelTransfer
        /// Re-arm reading the next request.
        case readyForNextRequest
        /// Issue the read the channel asked for while reading was held.
        case resumeReading
    }

    /// Where a request part (or a decoder error) that just arrived goes.
    public enum Admission: Sendable, Equatable {
        /// It belongs to the request in hand: handle it now.
        case now
        /// It belongs to a pipelined request behind the one being answered: kept, in order (`nextPending`).
        case queued
        /// The connection is closing: nothing more is answered.
        case dropped
    }

    /// Something that arrived for a later request while the current one is answered (RFC 9112 §9.3.2: answers go
    /// out in request order).
    public enum Pending: Sendable {
        case part(HTTPServerRequestPart)
        case error(GatewayError)
    }

    private(set) var state: State = .idle
    private(set) var reads = ReadDemand()
    /// Pipelined parts and errors, oldest first. Usually empty (no storage).
    private var pending: [Pending] = []
    /// A drain of `pending` is under way (answers written while draining must not start another).
    private var draining = false
    /// Shutting down: the request in hand is the last one answered.
    private(set) var quiescing = false
    /// Counts requests, so a late key refetch or local answer is told from the current request's.
    public private(set) var generation: UInt64 = 0

    public init() {}

    public var isIdle: Bool { state == .idle }

    public mutating func requestHead(
        rejection: GatewayError?, keepAlive: Bool, hasBody: Bool, target: Target = .upstream, bodyLimit: Int64 = .max
    ) -> Action {
        guard state == .idle else {
            // `admit` queues a pipelined head until the previous response is done, so a head can only arrive while
            // idle; anything else is a bug we answer safely.
            state = .closed
            return .respond(.requestMalformed, close: true)
        }
        let keepAlive = keepAlive && !quiescing
        generation &+= 1
        if let rejection {
            let close = rejection.closeConnection || !keepAlive || hasBody
            state = .rejected(requestComplete: false, close: close)
            return .respond(rejection, close: close)
        }
        state = .forwarding(Forwarding(keepAlive: keepAlive, target: target, bodyLimit: bodyLimit))
        return .startTransfer
    }

    /// A body part arrived: `.forwardBody`, or the early answer when the body grew past its limit.
    public mutating func requestBodyPart(_ part: ByteBuffer) -> Action {
        switch state {
        case .forwarding(var f) where !f.requestComplete:
            f.bodyBytes += Int64(part.readableBytes)
            if f.bodyBytes > f.bodyLimit { return requestBodyTooLarge() }
            state = .forwarding(f)
            return .forwardBody
        case .awaitingKeys(var held):
            state = .idle  // keeps `held` uniquely referenced while it grows
            held.parts.append(part)
            state = .awaitingKeys(held)
            return .none
        default: return .none
        }
    }

    public mutating func requestEnd() -> Action {
        switch state {
        case .awaitingKeys(var held):
            held.ended = true
            state = .awaitingKeys(held)
            return .none
        case .forwarding(var f):
            f.requestComplete = true
            state = .forwarding(f)
            switch f.target {
            case .upstream: return .finishUpload
            case .localService: return .askLocalService
            // The document went out with its head; its end waited for this (unread body bytes would otherwise be
            // read as the next request).
            case .localDocument: return f.responseHeadSent ? upstreamCompleted() : .none
            }
        case .rejected(_, let close):
            if close { return .none }
            state = .idle
            return .readyForNextRequest
        default:
            return .none
        }
    }

    public mutating func upstreamHead() -> Action {
        guard case .forwarding(var f) = state, !f.responseHeadSent else { return .none }
        f.responseHeadSent = true
        state = .forwarding(f)
        return .writeResponseHead(close: !f.keepAlive)
    }

    public mutating func upstreamCompleted() -> Action {
        guard case .forwarding(let f) = state else { return .none }
        // A response that finished before the request body did: the rest of the body is still on the wire.
        let close = !f.keepAlive || !f.requestComplete
        state = close ? .closed : .idle
        return .writeResponseEnd(close: close)
    }

    public mutating func upstreamFailed(_ error: GatewayError) -> Action {
        guard case .forwarding(let f) = state else { return .none }
        if f.responseHeadSent {
            state = .closed
            return .abortConnection
        }
        let close = !f.keepAlive || !f.requestComplete || error.closeConnection
        state = .rejected(requestComplete: f.requestComplete, close: close)
        if !close { state = .idle }
        return .respond(error, close: close)
    }

    /// The request body grew past `max_body_bytes` while streaming (chunked uploads).
    public mutating func requestBodyTooLarge() -> Action {
        guard case .forwarding(let f) = state else { return .none }
        state = .closed
        return f.responseHeadSent ? .abortConnection : .respond(.bodyTooLarge, close: true)
    }

    /// The client's byte stream broke: the decoder refused it (a malformed chunk line, an oversized head) or the
    /// body ended with forbidden trailers. Nothing after that point can be trusted, so the connection always closes:
    /// with `error` when no response has started (the transfer in flight is cancelled, so the upstream never sees
    /// the body complete), by abort when one has, silently when the request was already answered.
    public mutating func requestMalformed(_ error: GatewayError) -> Action {
        let previous = state
        state = .closed
        switch previous {
        case .idle, .awaitingKeys:
            return .respond(error, close: true)
        case .forwarding(let f):
            return f.responseHeadSent ? .abortConnection : .respond(error, close: true)
        case .rejected, .closed:
            return .none
        }
    }

    public mutating func clientClosed() -> Action {
        let wasInFlight: Bool
        switch state {
        case .forwarding, .awaitingKeys: wasInFlight = true
        default: wasInFlight = false
        }
        state = .closed
        return wasInFlight ? .cancelTransfer : .none
    }

    // MARK: - Waiting for keys

    /// The policy asked to wait for a key-set refetch before deciding this head. Returns the request's generation,
    /// to hand back to `keysRefetched`.
    public mutating func awaitKeys(_ request: HeldRequest) -> UInt64 {
        guard state == .idle else {
            state = .closed
            return generation
        }
        generation &+= 1
        state = .awaitingKeys(request)
        reads.held = true
        return generation
    }

    /// The refetch for `generation` finished: the held request, to decide again (reading is no longer held for
    /// it), or nil when that request is gone (answered, or the client left).
    public mutating func keysRefetched(generation: UInt64) -> HeldRequest? {
        guard generation == self.generation, case .awaitingKeys(let held) = state else { return nil }
        state = .idle
        reads.held = false
        return held
    }

    // MARK: - Pipelining

    /// Whether the request in hand has been read to its end (its answer may still be under way).
    private var requestSideComplete: Bool {
        switch state {
        case .idle, .closed: true
        case .awaitingKeys(let held): held.ended
        case .forwarding(let f): f.requestComplete
        case .rejected(let complete, _): complete
        }
    }

    /// A decoded request part arrived. Parts of the request in hand are handled now; anything after its end waits
    /// until its answer is complete (a client may pipeline requests; the answers must keep their order).
    public mutating func admit(_ part: HTTPServerRequestPart) -> Admission {
        if state == .closed { return .dropped }
        if pending.isEmpty {
            switch part {
            case .head where state == .idle: return .now
            case .body, .end: if !requestSideComplete { return .now }
            case .head: break
            }
        }
        if quiescing { return .dropped }
        pending.append(.part(part))
        return .queued
    }

    /// The decoder refused bytes: handle now if they belong to the request in hand (or none is in hand), else after
    /// the answers before them (`nextPending`).
    public mutating func admitError(_ error: GatewayError) -> Admission {
        if state == .closed { return .dropped }
        if pending.isEmpty && (state == .idle || !requestSideComplete) { return .now }
        if quiescing { return .dropped }
        pending.append(.error(error))
        return .queued
    }

    /// Starts handing out pending parts; false while a drain is already under way further up the stack (it goes
    /// on from there, so many pipelined requests answered at once never recurse).
    public mutating func beginDrain() -> Bool {
        guard !draining else { return false }
        draining = true
        return true
    }

    public mutating func endDrain() {
        draining = false
    }

    /// The next pending part or error, if the connection can take it now.
    public mutating func nextPending() -> Pending? {
        guard let first = pending.first else { return nil }
        if state == .closed {
            pending.removeAll()
            return nil
        }
        let ready: Bool
        switch first {
        case .part(.head): ready = state == .idle
        case .part(.body), .part(.end): ready = !requestSideComplete
        case .error: ready = state == .idle || !requestSideComplete
        }
        guard ready else { return nil }
        pending.removeFirst()
        return first
    }

    /// Shutting down (`ChannelShouldQuiesceEvent`): true to close now (nothing is in hand); otherwise the request
    /// in hand is answered with `Connection: close` (or closed after, if its head went out already) and nothing
    /// after it is answered.
    public mutating func quiesce() -> Bool {
        quiescing = true
        pending.removeAll()
        switch state {
        case .idle:
            state = .closed
            return true
        case .closed:
            return false
        case .awaitingKeys(var held):
            held.keepAlive = false
            state = .awaitingKeys(held)
            return false
        case .forwarding(var f):
            f.keepAlive = false
            state = .forwarding(f)
            return false
        case .rejected:
            // The answer is written: only the rest of a request body was still to be read.
            state = .closed
            return true
        }
    }

    // MARK: - Read demand

    /// No more bytes are read while the upload queue is full, keys are awaited, a complete request waits for its
    /// answer, or pipelined requests are queued: a client cannot make the gateway buffer without bound.
    private var readBlocked: Bool {
        if reads.held || !pending.isEmpty { return true }
        switch state {
        case .forwarding(let f): return f.requestComplete
        default: return false
        }
    }

    /// The channel asks to read: true to pass the read on now, false while reading is held.
    public mutating func readRequested() -> Bool {
        if readBlocked {
            reads.requested = true
            return false
        }
        return true
    }

    /// The upload queue went over its high watermark: hold reading.
    public mutating func uploadQueueFull() {
        reads.held = true
    }

    /// Reading may go on (the upload queue drained, a request ended); `.resumeReading` when a read is owed.
    public mutating func releaseReads() -> Action {
        reads.held = false
        guard reads.requested, !readBlocked else { return .none }
        reads.requested = false
        return .resumeReading
    }

    /// Whether reading is held (for a full upload queue or a key wait).
    public var isReadingHeld: Bool { reads.held }
}
