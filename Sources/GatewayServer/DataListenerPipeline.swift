import GatewayConfig
import GatewayControl
import GatewayProxy
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS

/// How the data listener sets up each accepted connection (DESIGN §5, §11), fixed at start.
///
/// Cleartext: the header and idle clocks, then `HTTPVersionSniffer`, which picks HTTP/1.1 or HTTP/2 (prior
/// knowledge) by the connection's first bytes. TLS: the TLS handler with the current context, a handshake
/// deadline, the clocks, then ALPN: `h2` gets HTTP/2, `http/1.1` HTTP/1.1, and a client that offered no ALPN is
/// sniffed like a cleartext one. Either way every request, an HTTP/1.1 one or one HTTP/2 stream, ends in a
/// `GatewayHandler`: the same routes, tokens, header policy, limits and error bodies.
///
/// Not `configureHTTP2SecureUpgrade` / `configureCommonHTTPServerPipeline`: their HTTP/1 branch builds a default
/// HTTP/1 pipeline (without the decoder limits and the clocks' boundary handler), and they know no sniffing.
struct DataListenerPipeline: Sendable {
    let connections: ConnectionRegistry
    let loopContexts: LoopContexts
    let accessLog: AccessLogSink
    let limits: Limits
    /// nil: a cleartext listener.
    let tls: ListenerTLSContext?

    /// Sets up one accepted connection; runs on its event loop.
    func initialize(_ channel: any Channel) throws {
        guard connections.open(channel, limit: limits.maxConnections) else {
            channel.close(promise: nil)
            return
        }
        let loop = loopContexts.context(on: channel.eventLoop)
        loop.metrics.connectionOpened()
        let bound = NIOLoopBound(loop, eventLoop: channel.eventLoop)
        let connections = self.connections
        channel.closeFuture.whenComplete { _ in
            connections.close(channel)
            bound.value.metrics.connectionClosed()
        }
        let sync = channel.pipeline.syncOperations
        let clocks = IdleConnectionHandler(
            headerTimeout: .milliseconds(Int64(limits.headerTimeoutMs)),
            idleTimeout: .milliseconds(Int64(limits.idleTimeoutMs)),
            loop: loop, accessLog: accessLog)
        guard let tls else {
            try sync.addHandler(clocks)
            try sync.addHandler(sniffer(clocks: clocks, connection: .plain))
            return
        }
        guard let context = tls.context else {
            channel.close(promise: nil)
            return
        }
        try sync.addHandler(NIOSSLServerHandler(context: context))
        try sync.addHandler(TLSHandshakeDeadline(timeout: .milliseconds(Int64(limits.headerTimeoutMs))))
        try sync.addHandler(clocks)
        try sync.addHandler(
            ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // Read once, here: every request of the connection carries it.
                    let connection = ClientConnection(isSecure: true, clientCertificateSubject: Self.peerSubject(sync))
                    switch result {
                    case .negotiated("h2"): try configureHTTP2(sync, clocks: clocks, connection: connection)
                    case .negotiated("http/1.1"): try configureHTTP1(sync, clocks: clocks, connection: connection)
                    case .fallback: try sync.addHandler(sniffer(clocks: clocks, connection: connection))
                    case .negotiated: channel.close(promise: nil)  // never offered
                    }
                }
            })
    }

    private func sniffer(clocks: IdleConnectionHandler, connection: ClientConnection) -> HTTPVersionSniffer {
        HTTPVersionSniffer { version, sync in
            switch version {
            case .http1: try configureHTTP1(sync, clocks: clocks, connection: connection)
            case .http2: try configureHTTP2(sync, clocks: clocks, connection: connection)
            }
        }
    }

    /// NIO's HTTP/1.1 codec with the gateway's decoder limits, the clocks' boundary handler and the gateway handler.
    func configureHTTP1(
        _ sync: ChannelPipeline.SynchronousOperations, clocks: IdleConnectionHandler, connection: ClientConnection
    ) throws {
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
        // No HTTPServerPipelineHandler: the gateway handler's state machine orders pipelined requests.
        try GatewayServer.addDataPathHTTP1Codec(to: sync, decoderLimits: decoderLimits)
        try GatewayServer.addBoundaries(of: clocks, to: sync)
        let loop = loopContexts.context(on: sync.eventLoop)
        try sync.addHandler(GatewayHandler(loop: loop, accessLog: accessLog, clock: GatewayServer.wallClock, connection: connection))
    }

    /// swift-nio-http2 with the gateway's settings; each stream gets the HTTP/1-style codec, the head limit and its
    /// own gateway handler. Its flood limits stay at the library's values, all on: 200 RST_STREAM and 200 stream
    /// errors per 30 s (rapid reset), 5 CONTINUATION frames in a row, 200 glitches, 10 000 buffered control frames;
    /// each ends the connection with GOAWAY (and `HTTP2ConnectionGuard` closes it). The management handler closes a
    /// connection idle (no open stream) for `idle_timeout_ms`, and at shutdown (`ChannelShouldQuiesceEvent`) sends
    /// GOAWAY and lets the streams in flight finish; the guard ends either within `drain_seconds` of the GOAWAY.
    func configureHTTP2(
        _ sync: ChannelPipeline.SynchronousOperations, clocks: IdleConnectionHandler, connection: ClientConnection
    ) throws {
        clocks.handOverToHTTP2()
        let eventLoop = sync.eventLoop
        let manager = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: eventLoop,
            configuration: .init(
                maxIdleTime: .milliseconds(Int64(limits.idleTimeoutMs)), maxAge: nil, maxGraceTime: nil, keepalive: nil))
        var settings = NIOHTTP2Handler.ConnectionConfiguration()
        settings.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: limits.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: limits.http2HeaderListSize),
            HTTP2Setting(parameter: .initialWindowSize, value: Self.streamWindow),
        ]
        // Uploads: the library's 64 KiB windows (stream and connection) stall a fast client every 64 KiB.
        settings.targetWindowSize = Self.connectionWindow
        var streamSettings = NIOHTTP2Handler.StreamConfiguration()
        streamSettings.targetWindowSize = Self.streamWindow
        // Downloads: the library's 8 KiB outbound watermark makes a stream unwritable after every upstream read,
        // pausing the libcurl transfer each time; these match the connection's own watermarks.
        streamSettings.outboundBufferSizeHighWatermark = 256 * 1024
        streamSettings.outboundBufferSizeLowWatermark = 64 * 1024
        var stream = connection
        stream.isHTTP2 = true
        let streamConnection = stream
        let loopContexts = self.loopContexts
        let accessLog = self.accessLog
        let maxHeaderBytes = limits.maxHeaderBytes
        let http2 = NIOHTTP2Handler(
            mode: .server, eventLoop: eventLoop, connectionConfiguration: settings, streamConfiguration: streamSettings,
            streamDelegate: manager.http2StreamDelegate,
            inboundStreamInitializer: { channel in
                channel.eventLoop.makeCompletedFuture {
                    let loop = loopContexts.context(on: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandlers([
                        HTTP2FramePayloadToHTTP1ServerCodec(),
                        StreamHeadLimitHandler(maxHeaderBytes: maxHeaderBytes),
                        GatewayHandler(loop: loop, accessLog: accessLog, clock: GatewayServer.wallClock, connection: streamConnection),
                    ])
                }
            })
        // The streams' flushes of one event-loop tick leave as one write (`FlushCoalescingHandler`).
        try sync.addHandler(FlushCoalescingHandler())
        try sync.addHandler(http2)
        let connectionGuard = HTTP2ConnectionGuard(grace: .seconds(Int64(max(1, limits.drainSeconds))))
        try sync.addHandler(connectionGuard)
        try sync.addHandler(manager)
        // The management handler starts its idle clock on `channelActive`, which this channel (active since before
        // the sniffer or TLS chose HTTP/2) does not send again; without this, a connection on which no stream ever
        // finished (a preface and nothing more, a header block never completed) was never closed.
        let guardContext = try sync.context(handler: connectionGuard)
        if guardContext.channel.isActive { guardContext.fireChannelActive() }
    }

    /// Flow-control windows: what one stream, and all streams of a connection, may send before the gateway reads
    /// on. Reads stop while an upload waits for its upstream, so this bounds the bytes buffered per stream.
    static let streamWindow = 256 * 1024
    static let connectionWindow = 1024 * 1024

    /// The verified client certificate's subject, when the handshake asked for one (mTLS).
    static func peerSubject(_ sync: ChannelPipeline.SynchronousOperations) -> String? {
        guard let certificate = try? sync.nioSSL_peerCertificate() else { return nil }
        return CertificateSubject.rfc4514(certificate.subjectName)
    }
}
