import CurlNIO
import GatewayConfig
import NIOCore
import NIOHTTP1

// WebSocket upgrades: an authorised opening handshake waits for its request to end, then the connection is handed
// over to a `WebSocketTunnelHandler`.
extension GatewayHandler {
    /// An authorised opening handshake: nothing is transferred; when the request is complete (`requestEnd`) the
    /// connection is handed to a `WebSocketTunnelHandler`.
    func openTunnel(_ forward: ProxyPolicy.Forward, key: String, keepAlive: Bool, context: ChannelHandlerContext) {
        guard let bytes = WebSocketHandshake.upstreamRequest(forward.request) else {
            return perform(machine.requestHead(rejection: .requestMalformed, keepAlive: false, hasBody: false), context: context)
        }
        guard case .startTransfer = machine.requestHead(rejection: nil, keepAlive: false, hasBody: false) else { return }
        let limits = policy.limits
        pendingTunnel = WebSocketTunnelHandler.Opening(
            request: forward.request, key: key, requestBytes: bytes, identity: forward.identity, leewaySeconds: policy.leewaySeconds,
            idleTimeout: .milliseconds(Int64(limits.websocketIdleTimeoutMs)),
            closeTimeout: .milliseconds(Int64(limits.websocketCloseTimeoutMs)), drainSeconds: limits.drainSeconds,
            realm: policy.realm)
    }

    /// Replaces the data path's handlers with the tunnel's: it goes right after the decoder (which keeps what the
    /// client sends next until the upstream has answered), everything after the decoder and the connection clocks in
    /// front of it go. The encoder stays for the answer.
    func handOver(_ opening: WebSocketTunnelHandler.Opening, context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        let tunnel = WebSocketTunnelHandler(
            loop: loop, accessLog: accessLog, access: access, requestID: requestID, opening: opening, clock: clock)
        // The tunnel writes the line from now on.
        access = AccessRecord()
        do {
            let decoder = try pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(tunnel, position: .after(decoder.handler))
        } catch {
            context.close(promise: nil)
            return
        }
        // The clocks go on the next tick: they are in the middle of passing this read to the decoder, and what follows
        // the request in it (a client that did not wait for the 101) must still reach the decoder, which keeps it for
        // the tunnel.
        if let clocks = try? pipeline.handler(type: IdleConnectionHandler.self) {
            let channelPipeline = context.pipeline
            context.eventLoop.assumeIsolated().execute {
                channelPipeline.syncOperations.removeHandler(clocks, promise: nil)
            }
        }
        if let boundaries = try? pipeline.handler(type: RequestBoundaryHandler.self) { pipeline.removeHandler(boundaries, promise: nil) }
        if let validator = try? pipeline.handler(type: NIOHTTPResponseHeadersValidator.self) {
            pipeline.removeHandler(validator, promise: nil)
        }
        pipeline.removeHandler(context: context, promise: nil)
    }
}
