import GatewayConfig
import GatewayTokens
import NIOCore
import NIOEmbedded
import NIOHTTP1

@testable import CurlNIO
@testable import GatewayProxy

/// Raw client bytes through the server's own pipeline pieces: NIO's HTTP/1.1 decoder with the gateway's limits and
/// pipelining assistance, then `GatewayHandler` (its public init, as `Tests/GatewayProxyTests` use it). Every
/// decoded head is also decided by a policy with public, optional, scoped and prefix-stripping routes, which
/// `ProbeHandler` checks:
/// - a forwarded request has a canonical target, carries no hop-by-hop, framing, `Authorization` or
///   identity-namespace header from the client, no CR/LF/NUL in any value, and an identity whenever its route
///   requires one;
/// - the handler's own policy has only token-required routes and trusts no issuer, so it must answer every
///   request itself with a 4xx (anything else means a request would have reached libcurl).
/// The first byte chooses how the rest is cut into reads (all at once, or pieces of 1…128 bytes).
let requestHeadTarget = FuzzTarget("request-head", "NIO HTTP/1 decoder + GatewayHandler + ProxyPolicy.decide", setUp: selfTest) { bytes in
    for status in exchange(bytes) {
        require(
            (100...199).contains(status) || (400...499).contains(status),
            "the reject-only gateway answered \(status): a request got past the head checks")
    }
}

/// A harness that silently stopped reaching the handler would still run "clean": check once that a plain request
/// and a pipelined second one (another scheme counts as no token) each get their 401 (answered by the handler, seen by the probe).
private func selfTest() {
    let request = Array("\u{0}GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eA==\r\n\r\n".utf8)
    let statuses = request.withUnsafeBytes { exchange($0) }
    require(statuses == [401, 401], "request-head self-test: expected [401, 401], got \(statuses)")
}

/// Runs one input through a new connection; the statuses of the gateway's answers, in order.
private func exchange(_ bytes: UnsafeRawBufferPointer) -> [Int] {
    let fixture = RequestHeadFixture.shared
    var input = FuzzInput(bytes)
    let selector = input.takeByte()
    let channel = EmbeddedChannel(loop: fixture.loop)
    let probe = ProbeHandler(policy: fixture.decidingPolicy)
    do {
        let sync = channel.pipeline.syncOperations
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: false, withOutboundHeaderValidation: true,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: fixture.decoderLimits)
        try sync.addHandler(probe)
        try sync.addHandler(GatewayHandler(loop: fixture.context, clock: { FuzzKeys.now }))
        try channel.connect(to: fixture.clientAddress).wait()
    } catch {
        require(false, "pipeline setup failed: \(error)")
    }
    let data = input.bytes
    let piece = selector & 0x80 == 0 ? max(data.count, 1) : Int(selector & 0x7F) + 1
    var offset = 0
    while offset < data.count, channel.isActive {
        let end = min(offset + piece, data.count)
        var buffer = channel.allocator.buffer(capacity: end - offset)
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: data[offset..<end]))
        _ = try? channel.writeInbound(buffer)
        fixture.loop.run()
        offset = end
    }
    while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
    _ = try? channel.finish()
    // Timers the connection left behind (the loop is shared by every input) run now, on a closed channel, rather
    // than piling up: each holds its pipeline alive and makes every later `run()` slower.
    fixture.loop.advanceTime(by: .hours(1))
    return probe.statuses
}

/// Built once: the loop, libcurl driver and policies are reused by every input (a new readiness thread per input
/// would cost more than the input itself).
final class RequestHeadFixture: @unchecked Sendable {
    static let shared = RequestHeadFixture()

    let loop = EmbeddedEventLoop()
    let watcher: CurlReadinessWatcher
    let context: LoopContext
    let decidingPolicy: ProxyPolicy
    let decoderLimits: NIOHTTPDecoderLimitConfiguration
    let clientAddress = try! SocketAddress(ipAddress: "192.0.2.7", port: 40000)

    private init() {
        watcher = try! CurlReadinessWatcher()
        let deciding = Self.configuration(
            routes: """
                {"path_prefix": "/public", "upstream": "app", "auth": "none"},
                {"path_prefix": "/opt", "upstream": "app", "auth": "optional"},
                {"path_prefix": "/admin", "methods": ["POST", "DELETE"], "upstream": "app", "scopes": ["admin"]},
                {"path_prefix": "/api", "upstream": "base", "strip_prefix": true},
                {"path_prefix": "/", "host": "internal.test", "upstream": "app"},
                {"path_prefix": "/", "upstream": "app"}
                """)
        decidingPolicy = ProxyPolicy(configuration: deciding, verifier: FuzzKeys.verifier, targets: Self.targets(deciding))
        // The handler's policy: every route needs a token and no issuer is trusted, so nothing is ever forwarded.
        let rejecting = Self.configuration(
            routes: """
                {"path_prefix": "/admin", "methods": ["POST", "DELETE"], "upstream": "app", "scopes": ["admin"]},
                {"path_prefix": "/api", "upstream": "base", "strip_prefix": true},
                {"path_prefix": "/", "upstream": "app"}
                """)
        let policy = ProxyPolicy(configuration: rejecting, verifier: TokenVerifier(issuers: []), targets: Self.targets(rejecting))
        context = LoopContext(
            driver: CurlLoopDriver(eventLoop: loop, watcher: watcher), policy: policy, tokenCacheEntries: 16, leeway: 30)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = rejecting.limits.maxHeaderBytes
        limits.maxHeaderListSize = rejecting.limits.maxHeaderBytes
        decoderLimits = limits
    }

    static func configuration(routes: String) -> GatewayConfiguration {
        let json = """
            {"limits": {"max_header_bytes": 4096, "max_body_bytes": 1024},
             "upstreams": {"app": {"url": "http://127.0.0.1:9"}, "base": {"url": "http://127.0.0.1:9/base"}},
             "routes": [\(routes)],
             "auth": {"audiences": ["api"]},
             "issuers": [{"issuer": "\(FuzzKeys.issuer)", "hmac_secret": "${SECRET}", "algorithms": ["HS256"]}],
             "identity_headers": {"claims": {"email": "X-Auth-Email"}}}
            """
        return try! GatewayConfiguration.parse(
            Array(json.utf8), baseDirectory: "/fuzz", environment: ["SECRET": String(decoding: FuzzKeys.hs256Secret, as: UTF8.self)])
    }

    static func targets(_ configuration: GatewayConfiguration) -> [String: UpstreamTarget] {
        Dictionary(uniqueKeysWithValues: configuration.upstreams.map { ($0.name, UpstreamTarget(upstream: $0)) })
    }
}

/// Decides every head with the rich policy and checks the forwarded request; records the statuses the gateway
/// answers with.
final class ProbeHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let policy: ProxyPolicy
    var statuses: [Int] = []
    private let cache = VerifiedTokenCache(capacity: 0)
    private let revocations = RevokedSessions()

    init(policy: ProxyPolicy) { self.policy = policy }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { check(head) }
        context.fireChannelRead(data)
    }

    /// A gRPC answer's status is in its trailers: the HTTP status of its head is 200 even for a refusal.
    private var awaitingGRPCStatus = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            if head.status == .ok, head.headers.first(name: "content-type")?.hasPrefix("application/grpc") == true {
                if let code = head.headers.first(name: "grpc-status") {
                    statuses.append(Self.httpClass(ofGRPCStatus: code))
                } else {
                    awaitingGRPCStatus = true
                }
            } else {
                statuses.append(Int(head.status.code))
            }
        case .end(let trailers):
            if awaitingGRPCStatus {
                awaitingGRPCStatus = false
                statuses.append(Self.httpClass(ofGRPCStatus: trailers?.first(name: "grpc-status") ?? ""))
            }
        case .body:
            break
        }
        context.write(data, promise: promise)
    }

    /// The HTTP status a gRPC refusal stands for (the gateway's own mapping); 200 for OK, a missing or any other
    /// status, which the targets' invariants then refuse.
    static func httpClass(ofGRPCStatus code: String) -> Int {
        switch code {
        case "16": 401
        case "7": 403
        case "12": 404
        case "8": 413
        case "13": 400
        case "4": 408
        default: 200
        }
    }

    private func check(_ head: HTTPRequestHead) {
        var matched: Int? = nil
        let body = policy.requestBody(head.headers)
        let decision = policy.decide(
            head: head, body: body, requestID: "fuzz", clientAddress: "192.0.2.7", cache: cache, revocations: revocations,
            now: FuzzKeys.now, mayAwaitKeys: false, matchedRoute: &matched)
        guard case .forward(let forward) = decision else { return }
        let route = policy.routes.routes[forward.routeIndex]
        require(head.method != .CONNECT && head.method != .TRACE, "\(head.method) forwarded")
        require(HeaderPolicy.validateFraming(head.headers), "a request with bad framing forwarded")
        if route.auth == .required {
            require(forward.identity != nil, "\(head.uri.debugBytes) forwarded to a token route without identity")
        }
        if let identity = forward.identity {
            for scope in route.scopes { require(identity.scopes.contains(scope), "scope \(scope) missing, forwarded anyway") }
        }
        // What libcurl sends must itself be canonical: the upstream resolves exactly the resource authorised.
        let target = forward.request.requestTarget
        guard case .success(let canonical) = CanonicalPath.parse(target) else {
            require(false, "forwarded target \(target.debugBytes) is not a valid path (from \(head.uri.debugBytes))")
            return
        }
        require(canonical.requestTarget == target, "forwarded target \(target.debugBytes) is not canonical (from \(head.uri.debugBytes))")
        var injected: [String: Int] = [:]
        var emptyLengths = 0
        for header in forward.request.headers {
            let name = HeaderPolicy.normalise(header.name)
            // The gateway's own framing, not the client's: a body-carrying method without a body is sent with
            // `Content-Length: 0` (libcurl would send no framing at all). The client's copy is always dropped.
            if name == "content-length" {
                require(header.value == "0" && forward.request.body == .none, "Content-Length \(header.value.debugBytes) forwarded")
                emptyLengths += 1
                continue
            }
            require(
                !header.name.isEmpty && header.name.utf8.allSatisfy { CurlHeaderParser.isTokenByte($0) },
                "header name \(header.name.debugBytes) forwarded")
            require(
                !header.value.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 },
                "CR, LF or NUL in forwarded \(header.name): \(header.value.debugBytes)")
            require(!forbiddenUpstream.contains(name), "client header \(header.name) forwarded")
            if name.hasPrefix("x-auth-") || name.hasPrefix("x-forwarded-") || name == "x-request-id" {
                injected[name, default: 0] += 1
            }
        }
        for (name, count) in injected { require(count == 1, "\(name) forwarded \(count) times") }
        require(emptyLengths <= 1, "Content-Length: 0 forwarded \(emptyLengths) times")
        if forward.identity == nil {
            require(injected.keys.allSatisfy { !$0.hasPrefix("x-auth-") }, "identity header forwarded for an anonymous request")
        }
    }
}

/// Never from the client to the upstream (DESIGN §5); the identity headers are checked separately, since the gateway
/// injects them itself for a verified token.
private let forbiddenUpstream: Set<String> = [
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate",
    "proxy-authorization", "content-length", "host", "expect", "authorization", "forwarded",
]
