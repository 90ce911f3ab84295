import NIOCore
import NIOHTTP2

/// Bounds how long an HTTP/2 connection outlives the end of its use; sits between `NIOHTTP2Handler` and the
/// connection management handler, so it sees the frames the latter writes.
///
/// - A connection error closes the connection. swift-nio-http2 answers one (a flood cut off, a malformed frame, a
///   bad preface) with GOAWAY and reports it, but leaves the socket open; a peer would keep it, and what it holds,
///   for as long as it likes. (And lets the stream multiplexer release the streams of the current read first.)
/// - The first GOAWAY (idle timeout, shutdown) starts a clock of `grace`; the connection is closed when it runs
///   out. The management handler closes a connection once its last stream has finished, but only after the client
///   has acknowledged the PING that follows the GOAWAY; a client that never does would keep the connection forever.
final class HTTP2ConnectionGuard: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let grace: TimeAmount
    private var deadline: Scheduled<Void>?
    private var closing = false

    init(grace: TimeAmount) {
        self.grace = grace
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if deadline == nil, case .goAway = unwrapOutboundIn(data).payload {
            let channel = context.channel
            deadline = context.eventLoop.scheduleTask(in: grace) { channel.close(promise: nil) }
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // swift-nio-http2 (1.46) keeps every stream channel that got frames during a read in a list it empties on
        // `channelReadComplete`; its inline multiplexer does not empty it when the connection goes away, and the list
        // and the stream channels hold each other. NIO sends no `channelReadComplete` when the channel closes during
        // the read (which is when a connection error arrives: a flood cut off, a read error), so without this every
        // stream of that read leaked (about 0.5 MiB per rapid-reset connection, measured). The extra read-complete
        // lets the multiplexer empty the list before the close. Once: the read-complete walks the whole pipeline, and
        // a handler before us (TLS) may answer it with another error.
        guard !closing else { return }
        closing = true
        context.pipeline.fireChannelReadComplete()
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension HTTP2ConnectionGuard: Sendable {}
