import GatewayProxy
import NIOCore
import NIOHTTP1

/// Sits in front of the HTTP decoder and enforces the two connection clocks of DESIGN §5: once the first byte of a
/// request head has arrived, the whole head must arrive within `header_timeout_ms` (else 408 and close — the
/// slowloris defence); a keep-alive connection with no request at all is closed silently after `idle_timeout_ms`.
/// The head's end is seen on raw bytes (`\r\n\r\n`), before any parsing.
final class IdleConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var timer: Scheduled<Void>?
    /// The first bytes of a request head have arrived and its end has not.
    private var inHead = false
    /// Tail of the previous read, to find a `\r\n\r\n` split across reads.
    private var tail: UInt32 = 0
    /// Requests whose response has not finished yet; no clock runs while one is in flight.
    private var inFlight = 0

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
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if inFlight == 0 {
            if !inHead && buffer.readableBytes > 0 {
                inHead = true
                let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
                arm(headerTimeout, context: context) { ctx in handler.value.timeOutHead(ctx) }
            }
            if inHead && containsHeadEnd(buffer) {
                inHead = false
                inFlight += 1
                timer?.cancel()
                timer = nil
            }
        }
        context.fireChannelRead(data)
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
        arm(idleTimeout, context: context) { ctx in ctx.close(promise: nil) }
    }

    private func arm(_ amount: TimeAmount, context: ChannelHandlerContext, _ fire: @escaping @Sendable (ChannelHandlerContext) -> Void) {
        timer?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: amount) { fire(loopBound.value) }
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
