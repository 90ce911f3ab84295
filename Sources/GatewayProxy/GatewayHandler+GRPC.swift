import NIOCore
import NIOHTTP1

// The gateway's own answers to gRPC calls (DESIGN §11).
extension GatewayHandler {
    /// A refusal of a gRPC call, in gRPC form (DESIGN §11): HTTP 200, `content-type: application/grpc`, no message,
    /// and trailers with the `grpc-status` and the §6 reason as `grpc-message`; a challenge goes in the head as
    /// `WWW-Authenticate`. On HTTP/2 the head and the trailers are two HEADERS frames (the second ends the stream);
    /// on HTTP/1.1 the answer is chunked so that the trailers go out.
    func respondGRPC(_ error: GatewayError, close: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(4)
        headers.add(name: "content-type", value: "application/grpc")
        headers.add(name: "x-request-id", value: requestID)
        if let challenge = error.wwwAuthenticate(realm: policy.realm) { headers.add(name: "www-authenticate", value: challenge) }
        if close && !connection.isHTTP2 { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let end = wrapOutboundOut(.end(GRPC.trailers(GRPC.status(for: error), message: error.reason)))
        // On HTTP/2 the stream is left for the client to end (it stops sending once it has the trailers): closing it
        // sends RST_STREAM(CANCEL), which a gRPC client may read before the trailers and report as CANCELLED.
        if close && !connection.isHTTP2 {
            let channel = context.channel
            context.writeAndFlush(end).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(end, promise: nil)
            releaseRead(context: context)
        }
    }

    /// A gRPC response whose head went out failed upstream (its deadline, a reset): instead of cutting the stream,
    /// which a client reads as a bare cancellation, end the call with trailers saying why, then close.
    func endGRPCCall(_ error: GatewayError, context: ChannelHandlerContext) {
        _ = exchange.release()
        responseTrailers = nil
        access.reason = error.reason
        access.write(to: accessLog, requestID: requestID, loop: loop)
        let end = wrapOutboundOut(.end(GRPC.trailers(GRPC.status(for: error), message: error.reason)))
        // As in `respondGRPC`: an HTTP/2 stream is left for the client to end after the trailers.
        if connection.isHTTP2 {
            context.writeAndFlush(end, promise: nil)
            return releaseRead(context: context)
        }
        let channel = context.channel
        context.writeAndFlush(end).whenComplete { _ in channel.close(promise: nil) }
    }
}
