import NIOCore
import NIOHTTP1

/// `IdleConnectionHandler`'s eyes behind the HTTP decoder: reports each decoded request head and end, and each
/// response end written, without changing anything that passes.
public final class RequestBoundaryHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    private let clocks: IdleConnectionHandler

    init(clocks: IdleConnectionHandler) {
        self.clocks = clocks
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): clocks.headDecoded(head)
        case .end: clocks.messageDecoded()
        case .body: break
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { clocks.responseEnded() }
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension RequestBoundaryHandler: Sendable {}
