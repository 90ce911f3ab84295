import NIOCore
import NIOHTTP1

/// Holds each HTTP/2 stream's request head to `limits.max_header_bytes`, measured as the HTTP/1.1 decoder would
/// see it (request line and `name: value` lines), so that one limit means the same on both protocols.
///
/// HTTP/2 connections advertise a larger header list size (`Limits.http2HeaderListSize`): a block over the
/// advertised size is a connection error that would end every stream. A head over the limit here is refused as
/// the HTTP/1 decoder refuses one (`HTTPParserError.headerOverflow`), which the gateway handler answers with 431
/// on this stream alone; the rest of the stream's request is dropped.
public final class StreamHeadLimitHandler: ChannelInboundHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart

    private let limit: Int
    private var refused = false

    public init(maxHeaderBytes: Int) {
        self.limit = maxHeaderBytes
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        if case .head(let head) = unwrapInboundIn(data), Self.size(of: head) > limit {
            refused = true
            context.fireErrorCaught(HTTPParserError.headerOverflow)
            return
        }
        context.fireChannelRead(data)
    }

    /// The head's size as HTTP/1.1 bytes: `METHOD uri HTTP/1.1\r\n` and `name: value\r\n` per field.
    static func size(of head: HTTPRequestHead) -> Int {
        var size = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        for (name, value) in head.headers { size += name.utf8.count + value.utf8.count + 4 }
        return size
    }
}

@available(*, unavailable)
extension StreamHeadLimitHandler: Sendable {}
