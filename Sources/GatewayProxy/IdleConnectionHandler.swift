import GatewayConfig
import NIOCore
import NIOHTTP1

/// Runs the two connection clocks of DESIGN §5 (`ConnectionClocks` decides; this handler feeds it events, keeps
/// one scheduled task per clock and writes the 408), and guards chunk sizes in front of the decoder
/// (`ChunkedBodyGuard`).
///
/// Raw bytes alone cannot say where one request ends and the next begins (a body may hold `\r\n\r\n`, and several
/// pipelined requests may share one read), so the clocks are fed from two places: this handler, in front of the
/// HTTP decoder, sees when bytes arrive; its `boundaries` companion, right after the decoder (before anything
/// queues pipelined requests), sees every request head and end as the decoder produces
/// them and every response end on its way out. The decoder runs synchronously inside `channelRead`, so once
/// `fireChannelRead` returns the companion has reported everything that read contained.
///
/// It also keeps the socket's read interest registered between requests (see `channelReadComplete`).
public final class IdleConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var clocks: ConnectionClocks
    /// The header clock's task; only scheduled for a head that does not arrive in one read.
    private var headTimer: Scheduled<Void>?
    /// The idle clock's task is lazy: finishing a response only moves the clocks' idle deadline, and one task, when
    /// it fires early, is scheduled again for the current deadline. Scheduling and cancelling a task for every
    /// request costs allocations and timer-heap work on the hot path.
    private var idleTimer: Scheduled<Void>?
    private var idleTimerDeadline: NIODeadline?
    private var context: ChannelHandlerContext?

    // Read-ahead (see `channelReadComplete`).
    /// A `read` from the pipeline reached us since the flag was last cleared.
    private var pipelineRead = false
    /// The outstanding read was issued by us, not asked for by the pipeline.
    private var speculative = false
    /// Bytes came in on a read of ours; no more of ours until the pipeline asks to read again.
    private var speculationUsed = false

    /// Sees each chunk line's declared size before the decoder does (`ChunkedBodyGuard`).
    private var chunkGuard: ChunkedBodyGuard
    /// A chunk line declared too much: later bytes are dropped until the connection closes.
    private var chunkRefused = false
    /// The framing of the head the decoder produced while a head's bytes were passed on (nil: none).
    private var decodedFraming: ChunkedBodyGuard.Framing?
    /// The connection speaks HTTP/2 (`handOverToHTTP2`): bytes pass untouched, no clock runs.
    private var passesThrough = false

    /// Where a 408 gets its request id, and is counted and logged.
    private let loop: LoopContext
    /// nil: not a data-path listener (admin); its 408s are neither counted nor logged as data-path requests.
    private let accessLog: AccessLogSink?

    /// - Parameter guardsChunkedBodies: whether chunk sizes are checked against the data path's `max_body_bytes`.
    public init(
        headerTimeout: TimeAmount, idleTimeout: TimeAmount, loop: LoopContext, accessLog: AccessLogSink?,
        guardsChunkedBodies: Bool = true
    ) {
        self.clocks = ConnectionClocks(headerTimeout: headerTimeout, idleTimeout: idleTimeout)
        self.loop = loop
        self.accessLog = accessLog
        self.chunkGuard = ChunkedBodyGuard(following: guardsChunkedBodies)
    }

    /// The companion to add right after the HTTP decoder.
    public func boundaries() -> RequestBoundaryHandler {
        RequestBoundaryHandler(clocks: self)
    }

    public func channelActive(context: ChannelHandlerContext) {
        perform(clocks.connectionStarted(now: context.eventLoop.now), context: context)
        context.fireChannelActive()
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { perform(clocks.connectionStarted(now: context.eventLoop.now), context: context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        // Removed when the connection becomes a WebSocket tunnel, whose clocks are its own.
        headTimer?.cancel()
        headTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        idleTimerDeadline = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        headTimer?.cancel()
        headTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        idleTimerDeadline = nil
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if speculative {
            speculative = false
            speculationUsed = true
        }
        if chunkRefused { return }
        if passesThrough { return context.fireChannelRead(data) }
        let buffer = unwrapInboundIn(data)
        if buffer.readableBytes > 0 { clocks.bytesArrived() }
        if chunkGuard.isFollowing {
            passGuarded(buffer, data, context: context)
        } else {
            context.fireChannelRead(data)
        }
        if passesThrough { return }
        perform(clocks.readDecoded(now: context.eventLoop.now), context: context)
    }

    /// The connection turned out to speak HTTP/2 (its preface, or ALPN `h2`): the clocks and the chunk guard, which
    /// read HTTP/1, stop, and every byte from now on passes untouched. HTTP/2's connection management (its idle
    /// timeout, GOAWAY at shutdown) takes over; a 408 written now would be garbage in an HTTP/2 stream of frames.
    public func handOverToHTTP2() {
        passesThrough = true
        headTimer?.cancel()
        headTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        idleTimerDeadline = nil
    }

    /// Passes a read on to the decoder through `chunkGuard`: split after each head end, so that the head's framing
    /// is known before its body is scanned, and cut short before a chunk line that declares too much. A read holding
    /// one whole head is passed on as it is.
    private func passGuarded(_ buffer: ByteBuffer, _ data: NIOAny, context: ChannelHandlerContext) {
        let count = buffer.readableBytes
        var passed = 0
        var scanned = 0
        while scanned < count {
            let outcome = buffer.withUnsafeReadableBytes { chunkGuard.scan(UnsafeRawBufferPointer(rebasing: $0[scanned...])) }
            switch outcome {
            case .consumed:
                scanned = count
            case .headEnd(let n):
                scanned += n
                decodedFraming = nil
                pass(buffer, data, passed..<scanned, context: context)
                passed = scanned
                if passesThrough {
                    // The preface (it reads like two heads) just handed the connection to HTTP/2: frames follow.
                    return pass(buffer, data, passed..<count, context: context)
                }
                chunkGuard.headDecoded(decodedFraming)
                guard context.channel.isActive else { return }
            case .chunkTooLarge:
                // Nothing from here on reaches the decoder: the connection is answered and closed.
                chunkRefused = true
                // The gateway handler answers it in order: behind an earlier pipelined request still being answered.
                context.fireErrorCaught(ChunkedBodyTooLargeError())
                return
            }
        }
        if passed < count { pass(buffer, data, passed..<count, context: context) }
    }

    private func pass(_ buffer: ByteBuffer, _ data: NIOAny, _ range: Range<Int>, context: ChannelHandlerContext) {
        guard !range.isEmpty else { return }
        if range.count == buffer.readableBytes {
            context.fireChannelRead(data)
        } else {
            context.fireChannelRead(wrapInboundOut(buffer.getSlice(at: buffer.readerIndex + range.lowerBound, length: range.count)!))
        }
    }

    /// After each read NIO asks the pipeline to read again, and the gateway handler (or `HTTPServerPipelineHandler`
    /// on the admin listener) holds that request while a response is outstanding — the usual case, since the
    /// upstream answers later. NIO then drops the socket's read interest (`epoll_ctl`) and adds it back when the
    /// response is done: two system calls per request. Instead, when the pipeline holds its read we issue one of our
    /// own, which keeps the interest registered. A client that waits for its response sends nothing meanwhile, so the
    /// read just stays pending. If bytes do arrive on it (pipelining, or more of an upload), they are passed on as
    /// usual and we issue no further read until the pipeline asks again, so at most one read's worth is taken beyond
    /// what the pipeline asked for.
    public func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        guard context.channel.isActive, !passesThrough else { return }
        pipelineRead = false
        context.channel.read()
        if !pipelineRead && !speculationUsed {
            speculative = true
            context.read()
        }
    }

    public func read(context: ChannelHandlerContext) {
        if passesThrough { return context.read() }
        pipelineRead = true
        speculative = false
        speculationUsed = false
        context.read()
    }

    // MARK: - Request boundaries (from `RequestBoundaryHandler`)

    func headDecoded(_ head: HTTPRequestHead) {
        if chunkGuard.isFollowing {
            decodedFraming = ChunkedBodyGuard.framing(of: head.headers, limit: loop.policy.limits.maxBodyBytes)
        }
        let action = clocks.headDecoded()
        if let context { perform(action, context: context) }
    }

    func messageDecoded() {
        clocks.messageDecoded()
    }

    func responseEnded() {
        let action = clocks.responseEnded(now: context?.eventLoop.now ?? .now())
        if let context { perform(action, context: context) }
    }

    // MARK: - Clocks

    private func perform(_ action: ConnectionClocks.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .scheduleHeaderTimer(let deadline):
            headTimer?.cancel()
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            headTimer = context.eventLoop.scheduleTask(deadline: deadline) {
                let this = handler.value
                this.headTimer = nil
                this.perform(this.clocks.headerTimerFired(now: loopBound.value.eventLoop.now), context: loopBound.value)
            }
        case .cancelHeaderTimer:
            headTimer?.cancel()
            headTimer = nil
        case .scheduleIdleTimer(let deadline):
            if let scheduled = idleTimerDeadline, scheduled <= deadline { return }
            idleTimer?.cancel()
            idleTimerDeadline = deadline
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
                let this = handler.value
                this.idleTimer = nil
                this.idleTimerDeadline = nil
                this.perform(this.clocks.idleTimerFired(now: loopBound.value.eventLoop.now), context: loopBound.value)
            }
        case .timeOutHead:
            timeOutHead(context)
        case .closeIdle:
            context.close(promise: nil)
        }
    }

    private func timeOutHead(_ context: ChannelHandlerContext) {
        // Answer 408 ourselves: the decoder has not produced a head, so the gateway handler knows nothing yet.
        let requestID = accessLog.map { loop.recordHeadTimeout(accessLog: $0) } ?? loop.nextRequestID()
        let body = GatewayError.requestTimeout.body(requestID: requestID)
        var out = context.channel.allocator.buffer(capacity: 256 + body.count)
        out.writeString(
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nX-Request-Id: \(requestID)\r\nContent-Length: \(body.count)\r\n\r\n"
        )
        out.writeBytes(body)
        let channel = context.channel
        context.writeAndFlush(NIOAny(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}

@available(*, unavailable)
extension IdleConnectionHandler: Sendable {}
