import NIOCore

/// Turns the flushes an HTTP/2 connection gets within one event-loop tick into one, issued at the end of the tick
/// (Netty's `FlushConsolidationHandler`, for writes that do not come from a read).
///
/// Each stream of a connection flushes on its own, and swift-nio-http2 passes every stream's flush to the socket at
/// once unless it happens while the connection is reading. The answers of an HTTP/2 connection mostly come from
/// libcurl's callbacks, many streams in one round of the driver: without this, each stream's answer was a `writev`
/// of its own (a profile at 128 streams in flight: an eighth of the CPU in `writev`, a third under `flush`). The
/// frames written meanwhile stay in the pipeline's pending writes; the one flush sends them together.
///
/// Sits between the socket (or TLS) and `NIOHTTP2Handler`. A flush is only ever deferred to the end of the current
/// tick, never dropped: a close or the handler's removal first flushes what was asked for.
public final class FlushCoalescingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var flushScheduled = false
    private var context: ChannelHandlerContext?

    public init() {}

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        // Whatever was asked for goes out now; the scheduled flush then has nothing to do.
        flushIfScheduled(context)
        self.context = nil
    }

    /// A close sends what was flushed before it (a GOAWAY, the last answers) first, as it would have without us.
    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        flushIfScheduled(context)
        context.close(mode: mode, promise: promise)
    }

    public func flush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            // A close may have flushed already.
            if let context = self.context { self.flushIfScheduled(context) }
        }
    }

    private func flushIfScheduled(_ context: ChannelHandlerContext) {
        guard flushScheduled else { return }
        flushScheduled = false
        context.flush()
    }
}

@available(*, unavailable)
extension FlushCoalescingHandler: Sendable {}
