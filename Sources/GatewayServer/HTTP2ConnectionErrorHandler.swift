import NIOCore
import NIOHTTP2

/// Last in an HTTP/2 connection's pipeline: closes the connection on a connection error. swift-nio-http2 answers
/// one (a flood cut off, a malformed frame, a bad preface) with GOAWAY and reports it, but leaves the socket open;
/// a peer would keep it, and what it holds, for as long as it likes. Stream errors go to their streams, not here.
final class HTTP2ConnectionErrorHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension HTTP2ConnectionErrorHandler: Sendable {}
