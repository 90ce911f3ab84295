import NIOCore
import NIOHTTP1

extension GatewayServer {
    /// The data path's HTTP/1.1 codec: `configureHTTPServerPipeline` without pipelining assistance or error handling
    /// (the gateway handler does both), with outbound header validation, and with a decoder that hands over the bytes
    /// a client sent after an Upgrade request when it is removed (`leftOverBytesStrategy: .forwardBytes`), which a
    /// WebSocket tunnel needs. NIO only builds that decoder when it is given an upgrade configuration, and only that
    /// way is the decoder paired with the encoder (which then frames answers to HEAD without a body); the gateway
    /// does its own upgrades (`WebSocketTunnelHandler`), so NIO's upgrade handler, which has no upgraders here, is
    /// taken out again at once.
    static func addDataPathHTTP1Codec(
        to sync: ChannelPipeline.SynchronousOperations, decoderLimits: NIOHTTPDecoderLimitConfiguration
    ) throws {
        let noUpgraders: NIOHTTPServerUpgradeConfiguration = (upgraders: [], completionHandler: { _ in })
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withServerUpgrade: noUpgraders, withErrorHandling: false,
            withOutboundHeaderValidation: true, withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: decoderLimits)
        let upgrader = try sync.handler(type: HTTPServerUpgradeHandler.self)
        sync.removeHandler(upgrader, promise: nil)
    }
}
