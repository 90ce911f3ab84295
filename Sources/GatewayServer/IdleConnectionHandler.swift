import GatewayProxy
import NIOCore
import NIOHTTP1

/// Sits in front of the HTTP decoder and enforces the two connection clocks of DESIGN §5: once the first byte of a
/// request head has arrived, the whole head must arrive within `header_timeout_ms` (else 408 and close — the
/// slowloris defence); a keep-alive connection with no request at all is closed silently after `idle_timeout_ms`.
/// The head's end is seen on raw bytes (`\r\n\r\n`), before any parsing.
///
/// It also keeps the socket's read interest registered between requests (see `channelReadComplete`).
final class IdleConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    /// The header clock; only armed for a head that does not arrive in one read.
    private var headTimer: Scheduled<Void>?
    /// The idle clock is lazy: finishing a response only moves `idleDeadline`, and one scheduled task, when it
    /// fires early, re-schedules itself for the current deadline. Scheduling and cancelling a task for every
    /// request costs allocations and timer-heap work on the hot path.
    private var idleDeadline: NIODeadline?
    private var idleTimer: Scheduled<Void>?
    private var idleTimerDeadline: NIODeadline?
    /// The first bytes of a request head have arrived and its end has not.
    private var inHead = false
    /// Tail of the previous read, to find a `\r\n\r\n` split across reads.
    private var tail: UInt32 = 0
    /// Requests whose response has not finished yet; no clock runs while one is in flight.
    private var inFlight = 0

    // Read-ahead (see `channelReadComplete`).
    /// A `read` from the pipeline reached us since the flag was last cleared.
    private var pipelineRead = false
    /// The outstanding read was issued by us, not asked for by the pipeline.
    private var speculative = false
    /// Bytes came in on a read of ours; no more of ours until the pipeline asks to read again.
    private var speculationUsed = false

    /// Where a 408 is counted and logged.
    private let loop: LoopContext
    private let accessLog: AccessLogSink

    init(headerTimeout: TimeAmount, idleTimeout: TimeAmount, loop: LoopContext, accessLog: AccessLogSink) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.loop = loop
        self.accessLog = accessLog
    }

    func channelActive(context: ChannelHandlerContext) {
        armIdle(context: context)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armIdle(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        headTimer?.cancel()
        headTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        idleDeadline = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if speculative {
            speculative = false
            speculationUsed = true
        }
        let buffer = unwrapInboundIn(data)
        if inFlight == 0 {
            var started = false
            if !inHead && buffer.readableBytes > 0 {
                inHead = true
                started = true
                idleDeadline = nil
            }
            if inHead {
                if containsHeadEnd(buffer) {
                    inHead = false
                    inFlight += 1
                    headTimer?.cancel()
                    headTimer = nil
                } else if started {
                    // Most heads arrive in one read; the header clock is armed only for those that do not.
                    let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
                    let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                    headTimer = context.eventLoop.scheduleTask(in: headerTimeout) {
                        handler.value.headTimer = nil
                        handler.value.timeOutHead(loopBound.value)
                    }
                }
            }
        }
        context.fireChannelRead(data)
    }

    /// After each read NIO asks the pipeline to read again, and `HTTPServerPipelineHandler` (or the gateway handler,
    /// for upload back-pressure) holds that request while a response is outstanding — the usual case, since the
    /// upstream answers later. NIO then drops the socket's read interest (`epoll_ctl`) and adds it back when the
    /// response is done: two system calls per request. Instead, when the pipeline holds its read we issue one of our
    /// own, which keeps the interest registered. A client that waits for its response sends nothing meanwhile, so the
    /// read just stays pending. If bytes do arrive on it (pipelining, or more of an upload), they are passed on as
    /// usual and we issue no further read until the pipeline asks again, so at most one read's worth is taken beyond
    /// what the pipeline asked for.
    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        guard context.channel.isActive else { return }
        pipelineRead = false
        context.channel.read()
        if !pipelineRead && !speculationUsed {
            speculative = true
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        pipelineRead = true
        speculative = false
        speculationUsed = false
        context.read()
    }

    /// The gateway handler, at the other end of the pipeline, says when a response has finished.
    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is ResponseCompleteEvent {
            inFlight = max(0, inFlight - 1)
            tail = 0
            if inFlight == 0 { armIdle(context: context) }
            promise?.succeed(())
            return
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    private func armIdle(context: ChannelHandlerContext) {
        let deadline = NIODeadline.now() + idleTimeout
        idleDeadline = deadline
        if let scheduled = idleTimerDeadline, scheduled <= deadline { return }
        scheduleIdleTimer(at: deadline, context: context)
    }

    private func scheduleIdleTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimerDeadline = deadline
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            handler.value.idleTimerFired(loopBound.value)
        }
    }

    private func idleTimerFired(_ context: ChannelHandlerContext) {
        idleTimer = nil
        idleTimerDeadline = nil
        // No deadline: a request started since (its own clocks apply; the next response end re-arms this one).
        guard let deadline = idleDeadline else { return }
        if deadline <= .now() {
            context.close(promise: nil)
        } else {
            scheduleIdleTimer(at: deadline, context: context)
        }
    }

    private func timeOutHead(_ context: ChannelHandlerContext) {
        // Answer 408 ourselves: the decoder has not produced a head, so the gateway handler knows nothing yet.
        let requestID = loop.recordHeadTimeout(accessLog: accessLog)
        let body = GatewayError.requestTimeout.body(requestID: requestID)
        var out = context.channel.allocator.buffer(capacity: 256 + body.count)
        out.writeString(
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nX-Request-Id: \(requestID)\r\nContent-Length: \(body.count)\r\n\r\n")
        out.writeBytes(body)
        let channel = context.channel
        context.writeAndFlush(NIOAny(out)).whenComplete { _ in channel.close(promise: nil) }
    }

    private func containsHeadEnd(_ buffer: ByteBuffer) -> Bool {
        var found = false
        var window = tail
        buffer.withUnsafeReadableBytes { bytes in
            // A request without a body usually arrives as exactly one read ending with its blank line: no scan.
            // (`tail` only matters while the end has not been found.)
            if bytes.count >= 4, UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self)) == 0x0A0D_0A0D {
                found = true
                return
            }
            for byte in bytes {
                window = window << 8 | UInt32(byte)
                if window == 0x0D0A_0D0A {
                    found = true
                    break
                }
            }
        }
        tail = window
        return found
    }
}

@available(*, unavailable)
extension IdleConnectionHandler: Sendable {}
