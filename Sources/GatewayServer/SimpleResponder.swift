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

    private let respond: (HTTPRequestHead, [UInt8], any EventLoop) -> EventLoopFuture<Response>
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private static let maxBody = 64 * 1024

    init(respond: @escaping (HTTPRequestHead, [UInt8]) -> Response) {
        self.respond = { head, body, loop in loop.makeSucceededFuture(respond(head, body)) }
    }

    /// For answers that take a while (introspection asks the session store); the future may complete on any loop.
    init(
        respondAsync: @escaping (HTTPRequestHead, [UInt8], any EventLoop) -> EventLoopFuture<Response>
    ) {
        self.respond = respondAsync
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
        case .body(let buffer):
            if body.count + buffer.readableBytes <= Self.maxBody {
                body.append(contentsOf: buffer.readableBytesView)
            } else {
                tooLarge = true
            }
        case .end:
            guard var head else { return }
            self.head = nil
            if tooLarge {
                tooLarge = false
                head.headers.replaceOrAdd(name: "Connection", value: "close")
                return write(
                    Response(
                        status: .payloadTooLarge, headers: [("Content-Type", "application/json")],
                        body: Array(#"{"error":"invalid_request","reason":"body_too_large"}"#.utf8)), for: head,
                    context: context)
            }
            // HTTPServerPipelineHandler holds the next request back until this response is complete.
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let request = head
            respond(request, body, context.eventLoop).hop(to: context.eventLoop).whenComplete { result in
                let (handler, context) = loopBound.value
                let response =
                    (try? result.get())
                    ?? Response(
                        status: .internalServerError, headers: [("Content-Type", "application/json")],
                        body: Array(#"{"error":"server_error","reason":"internal_error"}"#.utf8))
                handler.write(response, for: request, context: context)
            }
        }
    }

    private func write(
        _ response: Response, for head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders(response.headers)
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        if !head.isKeepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(
                .head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))),
            promise: nil)
        if !response.body.isEmpty {
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))),
                promise: nil)
        }
        let channel = context.channel
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension SimpleResponder: Sendable {}
