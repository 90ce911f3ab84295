import NIOCore
import NIOHTTP1

/// A small HTTP/1.1 handler for the gateway's own endpoints (admin, demo upstream): it collects the request,
/// asks `respond` for an answer and writes it. Bodies are bounded; these endpoints take no large input.
final class SimpleResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct Response {
        var status: HTTPResponseStatus
        var headers: [(String, String)]
        var body: [UInt8]
    }

    private let respond: (HTTPRequestHead, [UInt8]) -> Response
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private static let maxBody = 64 * 1024

    init(respond: @escaping (HTTPRequestHead, [UInt8]) -> Response) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
        case .body(let buffer):
            if body.count + buffer.readableBytes <= Self.maxBody { body.append(contentsOf: buffer.readableBytesView) }
        case .end:
            guard let head else { return }
            self.head = nil
            let response = respond(head, body)
            var headers = HTTPHeaders(response.headers)
            headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
            if !head.isKeepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
            if !response.body.isEmpty {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
            }
            let channel = context.channel
            let keepAlive = head.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension SimpleResponder: Sendable {}
