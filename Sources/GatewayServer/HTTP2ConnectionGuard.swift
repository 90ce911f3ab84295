import NIOCore
import NIOHTTP2

/// Bounds how long an HTTP/2 connection outlives the end of its use; sits between `NIOHTTP2Handler` and the
/// connection management handler, so it sees the frames the latter writes.
///
/// - A connection error closes the connection. swift-nio-http2 answers one (a flood cut off, a malformed frame, a
///   bad preface) with GOAWAY and reports it, but leaves the socket open; a peer would keep it, and what it holds,
///   for as long as it likes. (And lets the stream multiplexer release the streams of the current read first.) A
///   stream error, reported the same way, leaves the connection alone (`isStreamScoped`).
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
        // swift-nio-http2 reports stream errors here too (it has reset that stream with RST_STREAM, RFC 9113 §5.4.2),
        // and frames for a stream it no longer knows: the connection and its other streams go on. Its own budget
        // (200 stream errors in 30 s) turns a flood of them into a connection error, which is closed below.
        if Self.isStreamScoped(error) { return }
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

    /// Errors swift-nio-http2 raises for one stream (the request's own head or framing is invalid, RFC 9113 §8.1.1 and
    /// §8.3) or for a frame on a stream it no longer tracks. Any other error is taken as the connection's. Should one
    /// of these ever come as a connection error, swift-nio-http2 has sent GOAWAY, and the connection is closed by its
    /// idle clock and `drain_seconds` instead of at once.
    static func isStreamScoped(_ error: any Error) -> Bool {
        switch error {
        case is NIOHTTP2Errors.StreamError, is NIOHTTP2Errors.NoSuchStream, is NIOHTTP2Errors.StreamClosed,
            is NIOHTTP2Errors.MissingPseudoHeader, is NIOHTTP2Errors.DuplicatePseudoHeader,
            is NIOHTTP2Errors.PseudoHeaderAfterRegularHeader, is NIOHTTP2Errors.UnknownPseudoHeader,
            is NIOHTTP2Errors.UnsupportedPseudoHeader, is NIOHTTP2Errors.InvalidPseudoHeaders,
            is NIOHTTP2Errors.MissingHostHeader, is NIOHTTP2Errors.DuplicateHostHeader, is NIOHTTP2Errors.EmptyPathHeader,
            is NIOHTTP2Errors.InvalidStatusValue, is NIOHTTP2Errors.TrailersWithoutEndStream,
            is NIOHTTP2Errors.ForbiddenHeaderField, is NIOHTTP2Errors.InvalidPseudoHeaderValue,
            is NIOHTTP2Errors.InvalidHTTP2HeaderFieldName, is NIOHTTP2Errors.InvalidHTTP2HeaderFieldValue,
            is NIOHTTP2Errors.ContentLengthViolated, is NIOHTTP2Errors.ContentLengthHeadersMismatch,
            is NIOHTTP2Errors.ContentLengthHeaderNegative, is NIOHTTP2Errors.ContentLengthHeaderMalformedValue:
            return true
        default:
            return false
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension HTTP2ConnectionGuard: Sendable {}
