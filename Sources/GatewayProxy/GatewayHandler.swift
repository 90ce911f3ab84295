import CurlNIO
import GatewayConfig
import GatewayTokens
import Logging
import NIOCore
import NIOHTTP1

/// The data path of one client connection: authorises each request head synchronously on the event loop, then
/// streams it to the upstream through this loop's libcurl driver and streams the answer back, with back-pressure
/// both ways. Sits after NIO's HTTP/1.1 codec (without `HTTPServerPipelineHandler`): it translates NIO events and
/// upstream callbacks into `ConnectionStateMachine` events and performs the actions the machine returns, which
/// keeps pipelined requests in order, holds reads, and decides every early answer.
public final class GatewayHandler: ChannelDuplexHandler, RemovableChannelHandler, CurlTransferDelegate {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    let loop: LoopContext
    /// The policy the request in flight started with (a reload never changes a request half-way).
    var policy: ProxyPolicy
    let clock: @Sendable () -> Double
    /// Where access-log lines go; nil when `log.access_log` is off.
    let accessLog: AccessLogSink
    var access = AccessRecord()
    var machine = ConnectionStateMachine()
    private var context: ChannelHandlerContext?

    /// A test's fake upstream; nil: this loop's libcurl driver (no closure allocated per connection).
    private let startFake: UpstreamStarter?
    /// The client connection (TLS, client certificate, HTTP/2 stream), fixed for the handler's life.
    let connection: ClientConnection

    // The request in flight.
    var exchange = UpstreamExchange()
    var requestID = ""
    /// A request for a `LocalService` whose body is being collected or whose answer is awaited.
    private var local: (service: any LocalService, request: LocalRequest)?
    /// An authorised WebSocket opening handshake, handed over to a tunnel when its request is complete.
    var pendingTunnel: WebSocketTunnelHandler.Opening?
    /// The request in flight is a gRPC call: the gateway's own answers to it are in gRPC form.
    private var grpc = false
    /// The trailers that end the response in flight: the upstream's (`didReceiveTrailers`), and for a gRPC
    /// Trailers-Only answer the status fields moved out of its head.
    var responseTrailers: HTTPHeaders?

    /// The peer's address as text, formatted once per connection rather than for every request.
    private var cachedClientAddress: String??

    private func clientAddress(_ context: ChannelHandlerContext) -> String? {
        if let cached = cachedClientAddress { return cached }
        let address = context.channel.remoteAddress?.ipAddress
        cachedClientAddress = .some(address)
        return address
    }

    /// - Parameters:
    ///   - startTransfer: how forwarded requests reach the upstream; nil: `loop.driver` (libcurl).
    ///   - connection: the client connection this handler serves (one HTTP/2 stream of it, when `isHTTP2`).
    public init(
        loop: LoopContext, accessLog: AccessLogSink = .off, clock: @escaping @Sendable () -> Double,
        startTransfer: UpstreamStarter? = nil, connection: ClientConnection = .plain
    ) {
        self.connection = connection
        self.policy = loop.policy
        self.loop = loop
        self.accessLog = accessLog
        self.clock = clock
        self.startFake = startTransfer
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Client → gateway

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // A pipelined request waits (in the machine) until the answers before it are complete.
        guard case .now = machine.admit(part) else { return }
        handle(part, context: context)
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            requestHead(head, context: context)
        case .body(let buffer):
            requestBody(buffer, context: context)
        case .end(let trailers):
            if let trailers, HeaderPolicy.hasForbiddenTrailer(trailers) {
                return requestMalformed(.requestMalformed, context: context)
            }
            requestEnd(context: context)
        }
    }

    private func requestEnd(context: ChannelHandlerContext) {
        if let opening = pendingTunnel {
            pendingTunnel = nil
            return handOver(opening, context: context)
        }
        perform(machine.requestEnd(), context: context)
    }

    private func requestHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        requestID = head.headers.first(name: "x-request-id").flatMap { isAcceptableRequestID($0[...]) ? $0 : nil } ?? loop.nextRequestID()
        access = AccessRecord(method: head.method.rawValue, uri: head.uri)
        exchange.reset()
        local = nil
        pendingTunnel = nil
        grpc = GRPC.isGRPC(head.headers)
        responseTrailers = nil
        policy = loop.policy
        let body = policy.requestBody(head.headers)
        // NIO's decoder stops parsing after a request that asks for an upgrade: unless it becomes a WebSocket tunnel,
        // such a request is answered normally and its connection closed afterwards.
        let keepAlive = head.isKeepAlive && !head.headers.contains(name: "upgrade")
        decide(head, body: body, keepAlive: keepAlive, mayAwaitKeys: true, context: context)
    }

    private func decide(
        _ head: HTTPRequestHead, body: CurlRequestBody, keepAlive: Bool, mayAwaitKeys: Bool, context: ChannelHandlerContext
    ) {
        let hasBody = body != .none
        var matchedRoute: Int? = nil
        let decision = policy.decide(
            head: head, body: body, requestID: requestID, clientAddress: clientAddress(context),
            cache: loop.tokenCache, revocations: loop.revocations, now: clock(), mayAwaitKeys: mayAwaitKeys,
            connection: connection, grpc: grpc, matchedRoute: &matchedRoute)
        if let matchedRoute { access.route = policy.routes.routes[matchedRoute].pathPrefix }
        switch decision {
        case .awaitKeys(let refetched):
            awaitKeys(refetched, head: head, body: body, keepAlive: keepAlive, context: context)
        case .local(let service, let request):
            let action = machine.requestHead(
                rejection: nil, keepAlive: keepAlive, hasBody: hasBody, target: .localService, bodyLimit: Int64(service.maxBodyBytes))
            guard case .startTransfer = action else { return perform(action, context: context) }
            if case .length(let n) = body, n > service.maxBodyBytes {
                return perform(machine.requestBodyTooLarge(), context: context)
            }
            local = (service, request)
            access.route = policy.localService?.prefix
            if Self.expectsContinue(head.headers) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            }
        case .serve(let document):
            access.status = 200
            let action = machine.requestHead(rejection: nil, keepAlive: keepAlive, hasBody: hasBody, target: .localDocument)
            guard case .startTransfer = action else { return perform(action, context: context) }
            serve(document, head: head, context: context)
        case .reject(let error):
            // Errors that carry a Bearer challenge are the authorisation decisions (401, 403, 400 on Authorization).
            if error.challenge != nil { loop.metrics.decision(allowed: false, reason: error.reason) }
            perform(machine.requestHead(rejection: error, keepAlive: keepAlive, hasBody: hasBody), context: context)
        case .forward(let forward):
            let route = policy.routes.routes[forward.routeIndex]
            loop.metrics.decision(
                allowed: true, reason: forward.identity != nil ? "verified" : route.auth == .none ? "public" : "anonymous")
            access.route = route.pathPrefix
            access.subject = forward.identity?.subject
            access.upstreamStart = .now()
            if let key = forward.websocketKey {
                return openTunnel(forward, key: key, keepAlive: keepAlive, context: context)
            }
            let action = machine.requestHead(
                rejection: nil, keepAlive: keepAlive, hasBody: hasBody, bodyLimit: policy.limits.maxBodyBytes)
            if case .startTransfer = action {
                // Started before `exchange` is accessed: a driver may report (a failure) from inside `start`.
                let transfer: any UpstreamTransfer =
                    startFake?(forward.request, self) ?? loop.driver.start(forward.request, delegate: self)
                exchange.begin(transfer)
                // The client waits for a go-ahead before sending its body; give it only now that the request is
                // authorised (a rejected one gets its final answer instead, and the body is never invited).
                if Self.expectsContinue(head.headers) {
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
                }
            } else {
                perform(action, context: context)
            }
        }
    }

    // MARK: - Waiting for a key-set refetch

    /// Keeps the request undecided until `refetched` completes, reading nothing more from the client meanwhile: body
    /// parts already decoded are kept (at most one read's worth) and replayed once the request is decided.
    private func awaitKeys(
        _ refetched: EventLoopFuture<Void>, head: HTTPRequestHead, body: CurlRequestBody, keepAlive: Bool,
        context: ChannelHandlerContext
    ) {
        let generation = machine.awaitKeys(HeldRequest(head: head, body: body, keepAlive: keepAlive))
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        refetched.hop(to: context.eventLoop).whenComplete { _ in
            loopBound.value.keysRefetched(generation: generation)
        }
    }

    /// Decides the held request again with the loop's current policy (the refetched keys), never waiting twice.
    private func keysRefetched(generation: UInt64) {
        guard let context, let request = machine.keysRefetched(generation: generation) else { return }
        policy = loop.policy
        decide(request.head, body: request.body, keepAlive: request.keepAlive, mayAwaitKeys: false, context: context)
        for part in request.parts { requestBody(part, context: context) }
        if request.ended { requestEnd(context: context) }
        if !machine.isReadingHeld { releaseRead(context: context) }
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        switch machine.requestBodyPart(buffer) {
        case .forwardBody:
            if local != nil {
                local?.request.body.append(contentsOf: buffer.readableBytesView)
            } else {
                let (full, wake) = exchange.send(buffer)
                if full { machine.uploadQueueFull() }
                if wake { wakeUpstreamSender() }
            }
        case let action:
            perform(action, context: context)
        }
    }

    // MARK: - Actions

    func perform(_ action: ConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none, .startTransfer, .forwardBody:
            break
        case .respond(let error, let close):
            respond(error, close: close, context: context)
        case .finishUpload:
            if exchange.finishSending() { wakeUpstreamSender() }
        case .askLocalService:
            if let local { askLocalService(local.service, local.request, context: context) }
        case .writeResponseHead:
            break  // written by the curl delegate, which has the head
        case .writeResponseEnd(let close):
            _ = exchange.release()
            access.write(to: accessLog, requestID: requestID, loop: loop)
            // A gRPC stream answered before its request ended is left for the client to end: closing the stream
            // channel sends RST_STREAM(CANCEL), which a gRPC client may read before the trailers (CANCELLED).
            let close = close && !(grpc && connection.isHTTP2)
            let promise: EventLoopPromise<Void>? = close ? context.eventLoop.makePromise() : nil
            let trailers = responseTrailers
            responseTrailers = nil
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: promise)
            if close {
                let channel = context.channel
                promise?.futureResult.whenComplete { _ in channel.close(promise: nil) }
            } else {
                releaseRead(context: context)
            }
        case .abortConnection:
            if access.reason == nil { access.reason = "response_aborted" }
            access.write(to: accessLog, requestID: requestID, loop: loop)
            cancelUpstream()
            local = nil
            context.close(promise: nil)
        case .cancelTransfer:
            if access.reason == nil { access.reason = "client_closed" }
            // No response status was sent: log nginx's 499, "client closed request".
            if access.status == 0 { access.status = 499 }
            access.write(to: accessLog, requestID: requestID, loop: loop)
            cancelUpstream()
            local = nil
        case .readyForNextRequest:
            releaseRead(context: context)
        case .resumeReading:
            context.read()
        }
    }

    private func respond(_ error: GatewayError, close: Bool, context: ChannelHandlerContext) {
        // An answer of our own ends any transfer still in flight (a body that grew past the limit): cancelling
        // aborts it, so the upstream never sees the truncated body as a complete request.
        cancelUpstream()
        local = nil
        access.status = grpc ? 200 : Int(error.status.code)
        access.reason = error.reason
        access.write(to: accessLog, requestID: requestID, loop: loop)
        if grpc { return respondGRPC(error, close: close, context: context) }
        let body = error.body(requestID: requestID)
        var headers = HTTPHeaders()
        headers.reserveCapacity(5)
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Request-Id", value: requestID)
        if let challenge = error.wwwAuthenticate(realm: policy.realm) { headers.add(name: "WWW-Authenticate", value: challenge) }
        // On HTTP/2 closing ends only the stream, and the protocol has no `Connection` header.
        if close && !connection.isHTTP2 { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: error.status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        if close {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            // The connection carries on: reading may have been held for an upload that just ended early.
            releaseRead(context: context)
        }
    }

    /// Answers with a local document. It goes through the same state machine as a forwarded request that completes
    /// at once, so keep-alive and unread-body rules are the same.
    private func serve(_ document: LocalDocument, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: document.contentType)
        headers.add(name: "Content-Length", value: String(document.body.count))
        headers.add(name: "Cache-Control", value: document.cacheControl)
        headers.add(name: "X-Request-Id", value: requestID)
        guard case .writeResponseHead(let close) = machine.upstreamHead() else { return }
        // On HTTP/2 closing ends only the stream, and the protocol has no `Connection` header.
        if close && !connection.isHTTP2 { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: document.body)))), promise: nil)
        }
    }

    /// Hands a complete local request to its service and writes the answer when it comes, if the connection is
    /// still waiting for it.
    private func askLocalService(_ service: any LocalService, _ request: LocalRequest, context: ChannelHandlerContext) {
        let id = machine.generation
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        service.respond(to: request, on: context.eventLoop).hop(to: context.eventLoop).whenComplete { result in
            let handler = loopBound.value
            guard handler.machine.generation == id, handler.local != nil, let context = handler.context else { return }
            handler.local = nil
            let response: LocalResponse
            switch result {
            case .success(let r): response = r
            case .failure:
                response = LocalResponse(
                    status: .internalServerError, headers: ["Content-Type": "application/json"],
                    body: Array(#"{"error":"server_error","reason":"internal_error"}"#.utf8), reason: "internal_error")
            }
            handler.writeLocal(response, context: context)
        }
    }

    private func writeLocal(_ response: LocalResponse, context: ChannelHandlerContext) {
        guard case .writeResponseHead(let close) = machine.upstreamHead() else { return }
        access.status = Int(response.status.code)
        access.reason = response.reason
        access.subject = response.subject
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        headers.replaceOrAdd(name: "X-Request-Id", value: requestID)
        if close && !connection.isHTTP2 { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        perform(machine.upstreamCompleted(), context: context)
    }

    // MARK: - Back-pressure towards the client

    public func read(context: ChannelHandlerContext) {
        if machine.readRequested() { context.read() }
    }

    /// libcurl may ask for the body at once, from inside `resumeSending()`: call it outside any access to
    /// `exchange` (a copy of the reference, not of the exchange, whose queue would then be copied on write).
    private func wakeUpstreamSender() {
        let transfer = exchange.transfer
        transfer?.resumeSending()
    }

    private func cancelUpstream() {
        exchange.release()?.cancel()
    }

    /// Called whenever the connection may take more: hands out pipelined requests that can go now, then reads on.
    func releaseRead(context: ChannelHandlerContext) {
        if machine.beginDrain() {
            while let next = machine.nextPending() {
                switch next {
                case .part(let part): handle(part, context: context)
                case .error(let error): requestMalformed(error, context: context)
                }
            }
            machine.endDrain()
        }
        perform(machine.releaseReads(), context: context)
    }

    /// `ChannelShouldQuiesceEvent` (shutdown): idle connections close now, busy ones after the answer in hand.
    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        if machine.quiesce() { context.close(promise: nil) }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && exchange.takeReceivePause() {
            // Outside any access to `exchange`: libcurl may deliver body bytes before this returns.
            let transfer = exchange.transfer
            transfer?.resumeReceiving()
        }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        perform(machine.clientClosed(), context: context)
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let gatewayError: GatewayError
        switch error as? HTTPParserError {
        case .headerOverflow: gatewayError = .headerTooLarge
        case .some: gatewayError = .requestMalformed
        case .none where error is ChunkedBodyTooLargeError: gatewayError = .bodyTooLarge
        case .none:
            // Not about the bytes the client sent (an I/O error): nobody is left to answer; `channelInactive`
            // cancels what is in flight.
            context.close(promise: nil)
            return
        }
        // Bytes after a complete request belong to the next one: refused once the answers before them are out.
        guard case .now = machine.admitError(gatewayError) else { return }
        requestMalformed(gatewayError, context: context)
    }

    /// Decoder errors (a malformed chunk line mid-body included) and forbidden trailers: answer what the client got
    /// wrong when no response has started, then close — the byte stream is no longer trusted, and whatever follows
    /// (a smuggled request) must never be read as a request or reach the upstream as body.
    private func requestMalformed(_ error: GatewayError, context: ChannelHandlerContext) {
        if machine.isIdle {
            // No request head got this far: the error is the request.
            grpc = false
            requestID = loop.nextRequestID()
            access = AccessRecord(method: "-", uri: "-")
        }
        let action = machine.requestMalformed(error)
        if case .none = action {
            context.close(promise: nil)
        } else {
            perform(action, context: context)
        }
    }

    // MARK: - CurlTransferDelegate (called on this loop, possibly inside libcurl)

    public func curlTransfer(_ transfer: CurlTransfer, didReceiveHead head: CurlResponseHead) {
        upstream(transfer, didReceiveHead: head)
    }

    public func curlTransfer(_ transfer: CurlTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition {
        upstream(transfer, didReceiveBodyBytes: bytes)
    }

    public func curlTransfer(_ transfer: CurlTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        upstream(transfer, fillRequestBody: buffer)
    }

    public func curlTransferDidFinishBatch(_ transfer: CurlTransfer) {
        upstreamDidFinishBatch(transfer)
    }

    public func curlTransfer(_ transfer: CurlTransfer, didReceiveTrailers trailers: [CurlHeader]) {
        upstream(transfer, didReceiveTrailers: trailers)
    }

    public func curlTransfer(_ transfer: CurlTransfer, didCompleteWith result: Result<Void, CurlTransferError>) {
        upstream(transfer, didCompleteWith: result)
    }

    // MARK: - Upstream events (from any `UpstreamTransfer`; a test's fake calls these directly)

    func upstream(_ transfer: any UpstreamTransfer, didReceiveHead head: CurlResponseHead) {
        guard exchange.owns(transfer), let context else { return }
        // A response framed two ways (M-upstream-desync) is refused, not relayed: the client gets a 502 and the
        // cancelled transfer takes the upstream connection out of the pool.
        guard Self.isUnambiguouslyFramed(head) else {
            loop.metrics.upstreamError(route: access.route ?? "-", reason: GatewayError.upstreamInvalidResponse.reason)
            perform(machine.upstreamFailed(.upstreamInvalidResponse), context: context)
            return
        }
        guard case .writeResponseHead(let close) = machine.upstreamHead() else { return }
        access.status = head.status
        access.upstreamHead = .now()
        var headers = Self.clientResponseHeaders(head.headers)
        if grpc, headers.contains(name: "grpc-status") {
            // Trailers-Only (an immediate error, a call with no messages): the status fields end the stream as
            // trailers after the head, as gRPC requires of a response that has a head of its own; the rest stays in
            // the head.
            var trailers = HTTPHeaders()
            for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                for value in headers[name] { trailers.add(name: name, value: value) }
                headers.remove(name: name)
            }
            responseTrailers = trailers
        }
        if close && !connection.isHTTP2 { headers.replaceOrAdd(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: head.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    }

    func upstream(_ transfer: any UpstreamTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition {
        guard exchange.owns(transfer), let context else { return .consumed }
        if !context.channel.isWritable {
            exchange.pauseReceiving()
            context.flush()
            return .pause
        }
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        return .consumed
    }

    func upstream(_ transfer: any UpstreamTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        // A transfer we let go of must never see its body "complete": hold it until its cancellation lands.
        guard exchange.owns(transfer), let context else { return .pause }
        let (chunk, drained) = exchange.fill(buffer)
        if drained && machine.isReadingHeld { releaseRead(context: context) }
        return chunk
    }

    /// The upstream's trailers, kept to end the response with (framing and hop-by-hop fields dropped, in any
    /// spelling). A client on HTTP/1.1 gets them only on a chunked response: NIO's encoder drops them otherwise.
    func upstream(_ transfer: any UpstreamTransfer, didReceiveTrailers trailers: [CurlHeader]) {
        guard exchange.owns(transfer) else { return }
        var kept = responseTrailers ?? HTTPHeaders()
        for field in trailers where !HeaderPolicy.isForbiddenTrailer(field.name) {
            kept.add(name: field.name, value: field.value)
        }
        if !kept.isEmpty { responseTrailers = kept }
    }

    func upstreamDidFinishBatch(_ transfer: any UpstreamTransfer) {
        guard exchange.owns(transfer) else { return }
        context?.flush()
    }

    func upstream(_ transfer: any UpstreamTransfer, didCompleteWith result: Result<Void, CurlTransferError>) {
        guard exchange.owns(transfer), let context else { return }
        switch result {
        case .success:
            perform(machine.upstreamCompleted(), context: context)
        case .failure(let error):
            let gatewayError: GatewayError
            switch error.code {
            case .responseTimeout: gatewayError = .upstreamTimeout
            case .couldNotConnect, .connectionReset: gatewayError = .upstreamUnavailable
            case .idleTimeout: gatewayError = .upstreamTimeout
            case .deadlineExceeded: gatewayError = .deadlineExceeded
            default: gatewayError = .upstreamInvalidResponse
            }
            loop.metrics.upstreamError(route: access.route ?? "-", reason: gatewayError.reason)
            let action = machine.upstreamFailed(gatewayError)
            if grpc, case .abortConnection = action { return endGRPCCall(gatewayError, context: context) }
            perform(action, context: context)
        }
    }

    static func expectsContinue(_ headers: HTTPHeaders) -> Bool {
        headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    /// No `Content-Length` together with `Transfer-Encoding`, and no two different lengths.
    static func isUnambiguouslyFramed(_ head: CurlResponseHead) -> Bool {
        var framing = MessageFraming(strictTransferEncoding: false)
        for header in head.headers { framing.add(name: header.name, value: header.value) }
        return framing.isUnambiguous
    }

    /// The upstream's response headers as the client gets them: without the fields that describe the upstream hop
    /// (RFC 9110 §7.6.1), the fixed ones and every one the upstream named in `Connection`.
    static func clientResponseHeaders(_ upstream: [CurlHeader]) -> HTTPHeaders {
        // The names listed in `Connection`, other than the fixed hop-by-hop ones (usually none: no array is built).
        var listed: [Substring] = []
        for header in upstream where header.name.equalsIgnoringASCIICase("connection") {
            for token in header.value.split(separator: ",") {
                let name = token.trimmingSpaces
                if !name.isEmpty && !isHopByHopResponseHeader(name) { listed.append(name) }
            }
        }
        var headers = HTTPHeaders()
        headers.reserveCapacity(upstream.count + 1)
        for header in upstream where !isHopByHopResponseHeader(header.name) {
            if !listed.isEmpty && listed.contains(where: { header.name.equalsIgnoringASCIICase(other: $0) }) { continue }
            headers.add(name: header.name, value: header.value)
        }
        return headers
    }

    static func isHopByHopResponseHeader(_ name: some StringProtocol) -> Bool {
        // Called for every upstream response header: compare by length first, and without `lowercased()`.
        switch name.utf8.count {
        case 2: return name.equalsIgnoringASCIICase("te")
        case 7: return name.equalsIgnoringASCIICase("trailer") || name.equalsIgnoringASCIICase("upgrade")
        case 10: return name.equalsIgnoringASCIICase("connection") || name.equalsIgnoringASCIICase("keep-alive")
        case 16: return name.equalsIgnoringASCIICase("proxy-connection")
        case 17: return name.equalsIgnoringASCIICase("transfer-encoding")
        case 18: return name.equalsIgnoringASCIICase("proxy-authenticate")
        case 19: return name.equalsIgnoringASCIICase("proxy-authorization")
        default: return false
        }
    }
}

@available(*, unavailable)
extension GatewayHandler: Sendable {}
