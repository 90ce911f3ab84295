import CurlNIO
import GatewayTokens
import NIOCore
import NIOHTTP1

/// One WebSocket tunnel (DESIGN §10): takes over a client connection whose Upgrade request was authorised, writes
/// the handshake to the upstream on a libcurl connect-only connection, passes the upstream's answer back and, after
/// a valid `101`, relays bytes both ways with back-pressure until one side ends or the gateway ends the tunnel
/// (`WebSocketTunnelState` decides; this handler performs).
///
/// Pipeline: it is added right after the HTTP decoder when the Upgrade request is complete, and every other handler
/// of the data path goes (`GatewayHandler.handOver`). The response encoder stays until the answer is known: a
/// non-`101` answer is written through it and the connection closes after it (the decoder parses nothing after an
/// Upgrade request). On `101` the encoder is removed, the `101` written as raw bytes, then the decoder removed,
/// which hands over the bytes the client sent after its request (`leftOverBytesStrategy: .forwardBytes`).
///
/// Memory per tunnel is bounded: towards the upstream at most one read of the client's is held (reading stops until
/// it is sent); towards the client, reading the upstream stops while the channel is not writable.
final class WebSocketTunnelHandler: ChannelDuplexHandler, CurlTunnelDelegate, RevokedSessionWatcher {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What the tunnel needs from the authorised request.
    struct Opening {
        var request: CurlRequest
        var key: String
        var requestBytes: [UInt8]
        var identity: VerifiedToken?
        var leewaySeconds: Double
        var idleTimeout: TimeAmount
        var closeTimeout: TimeAmount
        var drainSeconds: Int
        var realm: String
    }

    private enum Phase {
        /// Waiting for the connection, then for the upstream's response head.
        case handshake
        /// Passing a non-101 answer's body back; the connection closes after it. `remaining`: the bytes left of a
        /// sized body; nil for a chunked one (`dechunker`) or one that ends when the upstream closes.
        case answering(remaining: Int64?)
        /// The tunnel is up.
        case relaying
        /// Everything is closed.
        case done
    }

    private let loop: LoopContext
    private let accessLog: AccessLogSink
    private var access: AccessRecord
    private let requestID: String
    private let opening: Opening
    private let clock: @Sendable () -> Double
    private var phase: Phase = .handshake
    private var state: WebSocketTunnelState
    private var context: ChannelHandlerContext?
    private var tunnel: CurlTunnel?

    /// The upstream's response head as it arrives.
    private var head: [UInt8] = []
    /// Takes the framing off a chunked non-101 answer (the client's encoder frames the body again).
    private var dechunker: ChunkedBodyDecoder?
    /// Bytes for the upstream not sent yet (retried from the same buffer after `.wouldBlock`).
    private var toUpstream = CircularBuffer<ByteBuffer>(initialCapacity: 2)
    /// An incomplete frame header from each side, presented to its tracker again with the next bytes (≤ 13 bytes).
    private var heldClient: ByteBuffer?
    private var heldUpstream: ByteBuffer?
    /// The client's channel asked to read while reading was held.
    private var readPending = false
    private var counted = false
    /// When the shutdown's drain ends, once it began (possibly while the handshake was still under way).
    private var drainEnd: NIODeadline?
    private var watchingRevocation = false

    private var handshakeTimer: Scheduled<Void>?
    private var expiryTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    private var drainTimer: Scheduled<Void>?
    private var lastActivity: NIODeadline = .now()

    init(
        loop: LoopContext, accessLog: AccessLogSink, access: AccessRecord, requestID: String, opening: Opening,
        clock: @escaping @Sendable () -> Double
    ) {
        self.loop = loop
        self.accessLog = accessLog
        self.access = access
        self.requestID = requestID
        self.opening = opening
        self.clock = clock
        self.state = WebSocketTunnelState()
    }

    // MARK: - Channel side

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        guard case .handshake = phase, tunnel == nil else { return }
        access.upstreamStart = .now()
        tunnel = loop.driver.openTunnel(opening.request, delegate: self)
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: opening.request.responseTimeout) { [self] in
            handshakeTimer = nil
            if case .handshake = phase { fail(.upstreamTimeout, reason: nil) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .relaying = phase else { return }  // nothing is parsed after an Upgrade request
        var buffer = unwrapInboundIn(data)
        if var held = heldClient {
            heldClient = nil
            held.writeBuffer(&buffer)
            buffer = held
        }
        lastActivity = context.eventLoop.now
        let relay = buffer.withUnsafeReadableBytes { state.receiveFromClient($0) }
        if relay.forward > 0, let bytes = buffer.getSlice(at: buffer.readerIndex, length: relay.forward) {
            toUpstream.append(bytes)
        }
        if relay.keep > 0, let bytes = buffer.getBytes(at: buffer.writerIndex - relay.keep, length: relay.keep) {
            heldClient = context.channel.allocator.buffer(bytes: bytes)
        }
        if let frame = relay.thenToOther { toUpstream.append(context.channel.allocator.buffer(bytes: frame)) }
        if let frame = relay.toSender {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
        }
        flushToUpstream()
        afterRelay(relay)
    }

    func read(context: ChannelHandlerContext) {
        if case .relaying = phase, toUpstream.isEmpty {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pumpFromUpstream() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Not behind half-sent bytes: the frame must start at a boundary on the wire too.
        if case .relaying = phase, toUpstream.isEmpty, let frame = state.clientGone(), let tunnel {
            // Best effort, once: the upstream hears a close frame rather than only the TCP close.
            frame.withUnsafeBytes { _ = tunnel.send($0) }
        }
        finish(reason: state.reason ?? "client_closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // An I/O error on the client's socket: nobody is left to tell.
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        if drainEnd == nil { drainEnd = context.eventLoop.now + .seconds(Int64(opening.drainSeconds)) }
        scheduleDrainEnd(context: context)
    }

    /// Tunnels stay up while the drain lasts and are closed (1001) at its end, leaving the close timeout for the peers
    /// to answer before the process stops.
    private func scheduleDrainEnd(context: ChannelHandlerContext) {
        guard let drainEnd, case .relaying = phase, drainTimer == nil else { return }
        let deadline = drainEnd - opening.closeTimeout - .milliseconds(250)
        drainTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            drainTimer = nil
            end(.shutdown)
        }
    }

    // MARK: - Upstream side (CurlTunnelDelegate)

    func curlTunnelDidConnect(_ tunnel: CurlTunnel) {
        guard tunnel === self.tunnel, case .handshake = phase, let context else { return }
        toUpstream.append(context.channel.allocator.buffer(bytes: opening.requestBytes))
        flushToUpstream()
        tunnel.watch(read: true, write: !toUpstream.isEmpty)
    }

    func curlTunnel(_ tunnel: CurlTunnel, didFailToConnect error: CurlTransferError) {
        guard tunnel === self.tunnel else { return }
        self.tunnel = nil
        fail(error.code == .responseTimeout ? .upstreamTimeout : .upstreamUnavailable, reason: nil)
    }

    func curlTunnelIsReadable(_ tunnel: CurlTunnel) {
        guard tunnel === self.tunnel else { return }
        switch phase {
        case .handshake: readHead()
        case .answering: pumpAnswer()
        case .relaying: pumpFromUpstream()
        case .done: break
        }
    }

    func curlTunnelIsWritable(_ tunnel: CurlTunnel) {
        guard tunnel === self.tunnel else { return }
        flushToUpstream()
    }

    func curlTunnelWasClosed(_ tunnel: CurlTunnel) {
        guard tunnel === self.tunnel else { return }
        self.tunnel = nil
        if case .handshake = phase {
            fail(.upstreamUnavailable, reason: nil)
        } else {
            finish(reason: "shutdown")
        }
    }

    // MARK: - Revocation

    func sessionRevoked() {
        end(.tokenRevoked)
    }

    // MARK: - Handshake

    private func readHead() {
        guard let tunnel else { return }
        while case .handshake = phase {
            var chunk = [UInt8](repeating: 0, count: 4096)
            let result = chunk.withUnsafeMutableBytes { tunnel.receive(into: $0) }
            switch result {
            case .bytes(let n):
                head.append(contentsOf: chunk[0..<n])
                let outcome = head.withUnsafeBytes { CurlResponseHeadScanner.scan($0) }
                switch outcome {
                case .incomplete:
                    continue
                case .invalid:
                    return fail(.upstreamInvalidResponse, reason: nil)
                case .head(let response, let consumed):
                    let rest = Array(head[consumed...])
                    head = []
                    return answer(response, rest: rest)
                }
            case .wouldBlock:
                return
            case .closed, .failed:
                return fail(.upstreamUnavailable, reason: nil)
            }
        }
    }

    private func answer(_ response: CurlResponseHead, rest: [UInt8]) {
        guard let context else { return }
        handshakeTimer?.cancel()
        handshakeTimer = nil
        access.upstreamHead = .now()
        if response.status == 101 {
            guard WebSocketHandshake.isValidSwitch(response, key: opening.key) else {
                return fail(.upstreamInvalidResponse, reason: "websocket_accept_invalid")
            }
            return switchProtocols(response, rest: rest, context: context)
        }
        // Any other answer goes back as it is and ends the exchange (the decoder reads nothing after an Upgrade).
        guard GatewayHandler.isUnambiguouslyFramed(response) else { return fail(.upstreamInvalidResponse, reason: nil) }
        var length: Int64? = nil
        var chunked = false
        for header in response.headers {
            if header.name.equalsIgnoringASCIICase("content-length") { length = Int64(header.value.trimmingSpaces) }
            if header.name.equalsIgnoringASCIICase("transfer-encoding") { chunked = true }
        }
        // A chunked answer is de-chunked on the way: the encoder frames the body itself (chunked again, the length
        // being unknown), and `clientResponseHeaders` drops the upstream's Transfer-Encoding.
        if chunked {
            dechunker = ChunkedBodyDecoder()
            length = nil
        }
        if response.status == 204 || response.status == 304 || (100..<200).contains(response.status) { length = 0 }
        access.status = response.status
        var headers = GatewayHandler.clientResponseHeaders(response.headers)
        headers.replaceOrAdd(name: "Connection", value: "close")
        if !headers.contains(name: "x-request-id") { headers.add(name: "X-Request-Id", value: requestID) }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(
            NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        phase = .answering(remaining: length)
        if !rest.isEmpty { writeAnswerBody(rest[...], context: context) }
        pumpAnswer()
    }

    /// Writes what belongs to the answer's body; ends the answer when it is complete.
    private func writeAnswerBody(_ bytes: ArraySlice<UInt8>, context: ChannelHandlerContext) {
        guard case .answering(let remaining) = phase else { return }
        if var decoder = dechunker {
            var payload: [UInt8] = []
            do {
                try decoder.decode(bytes, into: &payload)
                dechunker = decoder
            } catch {
                // Part of the answer has gone to the client: it can only be cut off.
                access.reason = "upstream_invalid_response"
                return closeEverything(flush: true)
            }
            if !payload.isEmpty {
                context.write(
                    NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(bytes: payload)))), promise: nil)
            }
            if decoder.isComplete { endAnswer(context: context) }
            return
        }
        var bytes = bytes
        if let remaining { bytes = bytes.prefix(Int(min(remaining, Int64(bytes.count)))) }
        if !bytes.isEmpty {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        if let remaining {
            let left = remaining - Int64(bytes.count)
            phase = .answering(remaining: left)
            if left == 0 { endAnswer(context: context) }
        }
    }

    private func pumpAnswer() {
        guard let context, let tunnel else { return }
        while case .answering = phase {
            guard context.channel.isWritable else {
                context.flush()
                tunnel.watch(read: false, write: false)
                return
            }
            var chunk = [UInt8](repeating: 0, count: 16 * 1024)
            let result = chunk.withUnsafeMutableBytes { tunnel.receive(into: $0) }
            switch result {
            case .bytes(let n):
                writeAnswerBody(chunk[0..<n], context: context)
            case .wouldBlock:
                context.flush()
                tunnel.watch(read: true, write: false)
                return
            case .closed:
                // A close-delimited body ends here; a sized or chunked one that ends early cannot be completed honestly.
                if case .answering(let remaining) = phase, remaining != nil || dechunker != nil {
                    access.reason = "upstream_closed"
                    closeEverything(flush: true)
                    return
                }
                endAnswer(context: context)
            case .failed:
                access.reason = "upstream_closed"
                closeEverything(flush: true)
                return
            }
        }
    }

    private func endAnswer(context: ChannelHandlerContext) {
        phase = .done
        tunnel?.close()
        tunnel = nil
        writeAccessLog()
        let channel = context.channel
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The gateway's own answer instead of the upstream's (the exchange failed before a head came back).
    private func fail(_ error: GatewayError, reason: String?) {
        guard case .handshake = phase, let context else { return }
        phase = .done
        handshakeTimer?.cancel()
        handshakeTimer = nil
        tunnel?.close()
        tunnel = nil
        loop.metrics.upstreamError(route: access.route ?? "-", reason: error.reason)
        access.status = Int(error.status.code)
        access.reason = reason ?? error.reason
        writeAccessLog()
        let body = error.body(requestID: requestID)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Request-Id", value: requestID)
        headers.add(name: "Connection", value: "close")
        context.write(
            NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: error.status, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// After a valid `101`: the HTTP codec goes, the `101` and whatever followed it go to the client, the tunnel is up.
    private func switchProtocols(_ response: CurlResponseHead, rest: [UInt8], context: ChannelHandlerContext) {
        access.status = 101
        let pipeline = context.pipeline.syncOperations
        if let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self) {
            pipeline.removeHandler(encoder, promise: nil)
        }
        phase = .relaying
        counted = true
        loop.metrics.websocketOpened()
        lastActivity = context.eventLoop.now
        context.write(
            wrapOutboundOut(context.channel.allocator.buffer(bytes: WebSocketHandshake.clientSwitchBytes(response, requestID: requestID))),
            promise: nil)
        if !rest.isEmpty { relayFromUpstream(context.channel.allocator.buffer(bytes: rest), context: context) }
        context.flush()
        // The decoder hands what the client sent after its request to this handler as it leaves.
        if let decoder = try? pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self) {
            pipeline.removeHandler(context: decoder, promise: nil)
        }
        guard case .relaying = phase else { return }
        startClocks(context: context)
        scheduleDrainEnd(context: context)
        if let identity = opening.identity, let sid = identity.sessionID {
            loop.revocations.watch(sid, issuer: identity.issuer, self)
            watchingRevocation = true
        }
        if toUpstream.isEmpty && readPending {
            readPending = false
            context.read()
        }
        pumpFromUpstream()
    }

    // MARK: - Relaying

    /// Sends queued client bytes; holds the client's reads while any are left.
    private func flushToUpstream() {
        guard let tunnel else { return }
        while !toUpstream.isEmpty {
            let result = toUpstream[toUpstream.startIndex].withUnsafeReadableBytes { tunnel.send($0) }
            switch result {
            case .bytes(let n):
                // Only the reader index moves: a retry after `.wouldBlock` reads the same memory, as TLS requires.
                toUpstream[toUpstream.startIndex].moveReaderIndex(forwardBy: n)
                if toUpstream[toUpstream.startIndex].readableBytes == 0 { toUpstream.removeFirst() }
            case .wouldBlock:
                tunnel.watch(read: wantsUpstreamRead, write: true)
                return
            case .closed, .failed:
                return upstreamEnded(failed: true)
            }
        }
        tunnel.watch(read: wantsUpstreamRead, write: false)
        if case .relaying = phase, readPending, let context {
            readPending = false
            context.read()
        }
    }

    private var wantsUpstreamRead: Bool {
        switch phase {
        case .handshake: return true
        case .answering, .relaying: return context?.channel.isWritable ?? false
        case .done: return false
        }
    }

    /// Reads the upstream while the client can take more; level-triggered read interest only while it can.
    private func pumpFromUpstream() {
        guard case .relaying = phase, let context, let tunnel else { return }
        var wrote = false
        defer { if wrote { context.flush() } }
        while context.channel.isWritable, case .relaying = phase {
            var buffer = context.channel.allocator.buffer(capacity: 16 * 1024)
            var result = CurlTunnel.IOResult.wouldBlock
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 * 1024) { raw in
                result = tunnel.receive(into: raw)
                if case .bytes(let n) = result { return n }
                return 0
            }
            switch result {
            case .bytes(let n):
                lastActivity = context.eventLoop.now
                // A small read would keep a 16 KiB allocation alive while it waits behind a slow client.
                if n < 4096 { buffer = context.channel.allocator.buffer(buffer: buffer) }
                relayFromUpstream(buffer, context: context)
                wrote = true
            case .wouldBlock:
                tunnel.watch(read: true, write: !toUpstream.isEmpty)
                return
            case .closed:
                return upstreamEnded(failed: false)
            case .failed:
                return upstreamEnded(failed: true)
            }
        }
        tunnel.watch(read: false, write: !toUpstream.isEmpty)
    }

    /// Tracks and writes what came from the upstream (not flushed).
    private func relayFromUpstream(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        var buffer = bytes
        if var held = heldUpstream {
            heldUpstream = nil
            held.writeBuffer(&buffer)
            buffer = held
        }
        let relay = buffer.withUnsafeReadableBytes { state.receiveFromUpstream($0) }
        if relay.forward > 0, let slice = buffer.getSlice(at: buffer.readerIndex, length: relay.forward) {
            context.write(wrapOutboundOut(slice), promise: nil)
        }
        if relay.keep > 0, let held = buffer.getBytes(at: buffer.writerIndex - relay.keep, length: relay.keep) {
            heldUpstream = context.channel.allocator.buffer(bytes: held)
        }
        if let frame = relay.thenToOther { context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil) }
        if let frame = relay.toSender {
            toUpstream.append(context.channel.allocator.buffer(bytes: frame))
            flushToUpstream()
        }
        afterRelay(relay)
    }

    /// After a relay step: a protocol error starts the close; a close handshake the client completed ends it.
    private func afterRelay(_ relay: WebSocketTunnelState.Relay) {
        guard case .relaying = phase else { return }
        // Counted in portcullis_websocket_closed_total under the error's code when the tunnel ends.
        if relay.failed != nil { startClosing() }
        if state.clientDone || (state.isClosing && state.bothClosed) {
            finish(reason: state.reason ?? "closed")
        }
    }

    private func upstreamEnded(failed: Bool) {
        guard case .relaying = phase, let context else { return }
        if let frame = state.upstreamGone() {
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
        }
        let reason = state.reason ?? (failed ? "upstream_error" : "upstream_closed")
        finish(reason: failed && reason == "upstream_closed" ? "upstream_error" : reason)
    }

    // MARK: - Ending

    private func startClocks(context: ChannelHandlerContext) {
        if let identity = opening.identity {
            let seconds = identity.expiresAt + opening.leewaySeconds - clock()
            let delay = TimeAmount.nanoseconds(Int64(max(0, seconds) * 1e9))
            expiryTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
                expiryTimer = nil
                end(.tokenExpired)
            }
        }
        scheduleIdleCheck(at: lastActivity + opening.idleTimeout, context: context)
    }

    /// One idle task, moved on lazily: activity only updates `lastActivity`.
    private func scheduleIdleCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            idleTimer = nil
            guard case .relaying = phase, let context = self.context else { return }
            let due = lastActivity + opening.idleTimeout
            if due <= context.eventLoop.now {
                end(.idle)
            } else {
                scheduleIdleCheck(at: due, context: context)
            }
        }
    }

    /// The gateway ends the tunnel: a close frame each way at the next frame boundary, then both sockets close when
    /// the client answered or after `websocket_close_timeout_ms`.
    private func end(_ cause: WebSocketTunnelState.Cause) {
        guard case .relaying = phase, let context, !state.isClosing else { return }
        let (toClient, toUpstreamFrame) = state.end(cause)
        if let frame = toClient {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
        }
        if let frame = toUpstreamFrame {
            toUpstream.append(context.channel.allocator.buffer(bytes: frame))
            flushToUpstream()
        }
        startClosing()
    }

    private func startClosing() {
        guard closeTimer == nil, case .relaying = phase, let context else { return }
        closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: opening.closeTimeout) { [self] in
            closeTimer = nil
            finish(reason: state.reason ?? "close_timeout")
        }
    }

    /// Closes both sides and writes the tunnel's log line, once.
    private func finish(reason: String) {
        switch phase {
        case .done:
            return
        case .handshake, .answering:
            // The client went away before the answer was complete.
            if access.reason == nil { access.reason = reason }
            if access.status == 0 { access.status = 499 }
            phase = .done
            handshakeTimer?.cancel()
            tunnel?.close()
            tunnel = nil
            writeAccessLog()
            context?.close(promise: nil)
        case .relaying:
            access.reason = state.reason ?? reason
            closeEverything(flush: true)
        }
    }

    private func closeEverything(flush: Bool) {
        if case .done = phase, !counted { return }
        let wasRelaying: Bool
        if case .relaying = phase { wasRelaying = true } else { wasRelaying = false }
        phase = .done
        for timer in [handshakeTimer, expiryTimer, idleTimer, closeTimer, drainTimer] { timer?.cancel() }
        handshakeTimer = nil
        expiryTimer = nil
        idleTimer = nil
        closeTimer = nil
        drainTimer = nil
        tunnel?.close()
        tunnel = nil
        toUpstream.removeAll()
        if watchingRevocation, let identity = opening.identity, let sid = identity.sessionID {
            loop.revocations.unwatch(sid, issuer: identity.issuer, self)
            watchingRevocation = false
        }
        if counted {
            counted = false
            loop.metrics.websocketClosed(reason: access.reason ?? "closed")
        }
        if wasRelaying { access.websocket = (state.fromClient, state.fromUpstream) }
        writeAccessLog()
        guard let context else { return }
        if flush {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            context.close(promise: nil)
        }
    }

    private func writeAccessLog() {
        access.write(to: accessLog, requestID: requestID, loop: loop)
    }
}

@available(*, unavailable)
extension WebSocketTunnelHandler: Sendable {}
