import CurlNIO
import GatewayConfig
import GatewayTokens
import NIOCore
import NIOHTTP1

/// Everything the data path needs to decide about a request, built once per configuration load (or key-set change)
/// and shared, immutable, by every event loop; each loop's `LoopContext` holds the current one.
public final class ProxyPolicy: Sendable {
    public let routes: RouteTable
    /// Per route (same index as `routes.routes`), where it forwards to.
    public let targets: [UpstreamTarget]
    public let headers: HeaderPolicy
    public let verifier: TokenVerifier
    public let realm: String
    public let limits: Limits
    /// `auth.leeway_seconds`: a WebSocket tunnel ends this long after its token's `exp`, as the verifier would refuse it.
    public let leewaySeconds: Double
    public let tokenCacheEntries: Int
    /// Documents the gateway serves itself on GET/HEAD, by exact canonical path (the token service's JWKS).
    public let localDocuments: [String: LocalDocument]
    /// The token endpoints: every request whose canonical path is `prefix` or under it goes to `service`.
    public let localService: (prefix: String, service: any LocalService)?
    /// The token service's own issuer, whose sessions `RevokedSessions` names.
    public let ownIssuer: String?
    /// Asked for a refetch when a token names an unknown key (remote key sets); nil when every key set is local.
    public let keyRefetcher: (any KeyRefetcher)?

    public init(
        configuration: GatewayConfiguration, verifier: TokenVerifier, targets: [String: UpstreamTarget],
        localDocuments: [String: LocalDocument] = [:], localService: (prefix: String, service: any LocalService)? = nil,
        keyRefetcher: (any KeyRefetcher)? = nil
    ) {
        self.keyRefetcher = keyRefetcher
        self.localDocuments = localDocuments
        self.localService = localService
        self.ownIssuer = configuration.tokenService?.issuer
        self.routes = RouteTable(configuration.routes)
        self.targets = configuration.routes.map { targets[$0.upstream]! }
        self.headers = HeaderPolicy(identity: configuration.identityHeaders, forwardToken: configuration.auth.forwardToken)
        self.verifier = verifier
        self.realm = configuration.auth.realm
        self.limits = configuration.limits
        self.leewaySeconds = Double(configuration.auth.leewaySeconds)
        self.tokenCacheEntries = configuration.auth.tokenCacheEntries
    }

    /// A copy of this policy with another key table (a remote key set changed); every other field is shared.
    public func replacing(verifier: TokenVerifier) -> ProxyPolicy {
        ProxyPolicy(copying: self, verifier: verifier)
    }

    /// A copy with another key table and some documents replaced (the token service's JWKS after a key of a shared
    /// store was added, activated or dropped); documents not named in `documents` and every other field are shared.
    public func replacing(verifier: TokenVerifier, documents: [String: LocalDocument]) -> ProxyPolicy {
        guard !documents.isEmpty else { return replacing(verifier: verifier) }
        return ProxyPolicy(copying: self, verifier: verifier, documents: localDocuments.merging(documents) { _, new in new })
    }

    private init(copying other: ProxyPolicy, verifier: TokenVerifier, documents: [String: LocalDocument]? = nil) {
        self.routes = other.routes
        self.targets = other.targets
        self.headers = other.headers
        self.verifier = verifier
        self.realm = other.realm
        self.limits = other.limits
        self.leewaySeconds = other.leewaySeconds
        self.tokenCacheEntries = other.tokenCacheEntries
        self.localDocuments = documents ?? other.localDocuments
        self.localService = other.localService
        self.ownIssuer = other.ownIssuer
        self.keyRefetcher = other.keyRefetcher
    }

    /// What to do with a request, decided from its head alone.
    public enum Decision: Sendable {
        case forward(Forward)
        case reject(GatewayError)
        /// Answer with one of `localDocuments`.
        case serve(LocalDocument)
        /// Collect the body and let the local service answer.
        case local(any LocalService, LocalRequest)
        /// The token names a key its (remote) issuer may just have published: decide again, with
        /// `mayAwaitKeys: false`, once the future completes (a refetch finished and its keys are installed).
        case awaitKeys(EventLoopFuture<Void>)
    }

    public struct Forward: Sendable {
        public var routeIndex: Int
        public var request: CurlRequest
        public var identity: VerifiedToken?
        /// The client's `Sec-WebSocket-Key` when this is a WebSocket opening handshake (tunnelled, not transferred).
        public var websocketKey: String?
    }

    /// Authorises a request head: framing, path, route, token, scopes — in that order, so that cheap checks run
    /// before any signature is verified — and builds the upstream request when everything passes.
    /// - Parameters:
    ///   - body: the request's framing, `requestBody(head.headers)` (the handler needs it too, so it is computed once).
    ///   - mayAwaitKeys: whether an unknown key may answer `.awaitKeys` (false when deciding again after a wait, so
    ///     no request ever waits for two fetches).
    ///   - connection: the client connection the request came on (TLS, client certificate).
    ///   - grpc: the request is a gRPC call (`GRPC.isGRPC`): it needs an HTTP/2 upstream, keeps `te: trailers` and
    ///     has its `grpc-timeout` as the transfer's deadline.
    public func decide(
        head: HTTPRequestHead,
        body: CurlRequestBody,
        requestID: String,
        clientAddress: String?,
        cache: VerifiedTokenCache,
        revocations: RevokedSessions,
        now: Double,
        mayAwaitKeys: Bool = true,
        connection: ClientConnection = .plain,
        grpc: Bool = false,
        matchedRoute: inout Int?
    ) -> Decision {
        let method = head.method.rawValue
        if head.method == .CONNECT || head.method == .TRACE { return .reject(.methodNotAllowed) }
        guard HeaderPolicy.validateFraming(head.headers) else { return .reject(.requestMalformed) }
        let hosts = Self.hostField(head.headers)
        if hosts.count > 1 { return .reject(.requestMalformed) }
        if case .length(let n) = body, n > limits.maxBodyBytes { return .reject(.bodyTooLarge) }

        let canonical: CanonicalPath
        switch CanonicalPath.parse(head.uri) {
        case .success(let c): canonical = c
        case .failure: return .reject(.invalidPath)
        }
        if !localDocuments.isEmpty, head.method == .GET || head.method == .HEAD, body == .none,
            let document = localDocuments[canonical.path]
        {
            return .serve(document)
        }
        if let (prefix, service) = localService, RouteTable.prefixMatches(prefix, canonical.matchPath) {
            let request = LocalRequest(
                method: head.method, path: canonical.path, query: canonical.query, headers: head.headers,
                body: [], clientAddress: clientAddress, requestID: requestID)
            return .local(service, request)
        }
        let host = routes.hasHostRules ? hosts.first.map { hostWithoutPort($0) } : nil
        guard let routeIndex = routes.match(method: method, host: host, path: canonical.matchPath) else {
            return .reject(.routeNotFound)
        }
        let route = routes.routes[routeIndex]
        matchedRoute = routeIndex
        var websocketKey: String? = nil
        switch WebSocketHandshake.classify(head, hasBody: body != .none) {
        case .none: break
        case .invalid: return .reject(route.websocket ? .websocketHandshakeInvalid : .websocketNotAllowed)
        case .upgrade(let key):
            guard route.websocket else { return .reject(.websocketNotAllowed) }
            websocketKey = key
        }

        var identity: VerifiedToken? = nil
        if route.auth != .none {
            switch BearerCredential.extract(from: head.headers) {
            case .invalidRequest:
                return .reject(.invalidAuthorization)
            case .absent:
                if route.auth == .required { return .reject(.tokenMissing) }
            case .token(let token):
                switch verify(token, cache: cache, now: now) {
                case .success(let verified):
                    // After the cache too: a revocation must stop tokens that were verified before it.
                    if !revocations.isEmpty, let sid = verified.sessionID, revocations.contains(sid, issuer: verified.issuer, now: now) {
                        return .reject(.invalidToken(TokenRejection(.tokenRevoked)))
                    }
                    identity = verified
                case .failure(let rejection):
                    if rejection.reason == .keyUnknown, mayAwaitKeys, let wait = refetchKeys(for: token) {
                        return .awaitKeys(wait)
                    }
                    return .reject(.invalidToken(rejection))
                }
            }
            if let identity, !route.scopes.isEmpty {
                for scope in route.scopes where !identity.scopes.contains(scope) {
                    return .reject(.insufficientScope(route.scopes))
                }
            }
        }

        let target = targets[routeIndex]
        if grpc && target.httpVersion == .http1_1 { return .reject(.upstreamNotHTTP2) }
        let path = RouteTable.upstreamPath(for: route, canonicalPath: canonical.path, basePath: target.basePath)
        var upstreamHeaders = headers.upstreamHeaders(
            from: head.headers, identity: identity, clientAddress: clientAddress, requestID: requestID, connection: connection,
            keepTrailersTE: grpc)
        if body == .none, Self.sendsEmptyLength(head) {
            // libcurl frames a request without a body with no framing header at all; for a method that carries a
            // body that reads as "length unknown", and servers that require one answer 411.
            upstreamHeaders.append(CurlHeader(name: "Content-Length", value: "0"))
        }
        let request = CurlRequest(
            origin: target.origin,
            requestTarget: canonical.query.map { "\(path)?\($0)" } ?? path,
            method: method,
            headers: upstreamHeaders,
            body: body,
            unixSocketPath: target.unixSocket,
            tls: target.tls,
            connectTimeout: target.connectTimeout,
            responseTimeout: target.responseTimeout,
            idleTimeout: target.idleTimeout,
            httpVersion: target.httpVersion,
            deadline: grpc ? GRPC.timeout(head.headers) : nil
        )
        return .forward(Forward(routeIndex: routeIndex, request: request, identity: identity, websocketKey: websocketKey))
    }

    /// Verifies through the loop's cache: a repeated token costs a hash and a compare, not a signature check.
    func verify(_ token: Substring, cache: VerifiedTokenCache, now: Double) -> Result<VerifiedToken, TokenRejection> {
        var token = token
        return token.withUTF8 { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            if let hit = cache.lookup(raw, now: now) { return .success(hit) }
            let result = verifier.verify(raw, now: now)
            if case .success(let verified) = result { cache.insert(raw, verified, now: now) }
            return result
        }
    }

    /// Asks for the token's issuer's keys again (only reached after `key_unknown`, never for a valid token).
    func refetchKeys(for token: Substring) -> EventLoopFuture<Void>? {
        guard let keyRefetcher else { return nil }
        var token = token
        let issuer = token.withUTF8 { verifier.unverifiedIssuer(of: UnsafeRawBufferPointer($0)) }
        guard let issuer else { return nil }
        return keyRefetcher.refetchKeys(issuer: issuer)
    }

    /// The request's body framing as libcurl should send it.
    func requestBody(_ headers: HTTPHeaders) -> CurlRequestBody {
        if headers.contains(name: "transfer-encoding") { return .chunked }
        if let value = headers.first(name: "content-length"), let n = Int64(value.split(separator: ",").first?.trimmingSpaces ?? "") {
            return n == 0 ? .none : .length(n)
        }
        return .none
    }

    /// Whether an empty body is forwarded with an explicit `Content-Length: 0`: always for the methods that carry a
    /// body (POST, PUT, PATCH), and when the client said so on any other method but GET and HEAD.
    static func sendsEmptyLength(_ head: HTTPRequestHead) -> Bool {
        switch head.method {
        case .POST, .PUT, .PATCH: return true
        case .GET, .HEAD: return false
        default: return head.headers.contains(name: "content-length")
        }
    }

    /// The number of values and the first value of `headers[canonicalForm: "host"]`, without building that array
    /// (and the arrays behind it) in the usual case of one plain `Host` line.
    static func hostField(_ headers: HTTPHeaders) -> (count: Int, first: Substring?) {
        var lines = 0
        var only: String? = nil
        for (name, value) in headers where name.equalsIgnoringASCIICase("host") {
            lines += 1
            only = value
        }
        if lines == 0 { return (0, nil) }
        if lines == 1, let value = only, let first = value.utf8.first, let last = value.utf8.last, first > 0x20,
            last > 0x20, !value.utf8.contains(UInt8(ascii: ","))
        {
            return (1, value[...])
        }
        let hosts = headers[canonicalForm: "host"]
        return (hosts.count, hosts.first)
    }

    func hostWithoutPort(_ host: some StringProtocol) -> Substring {
        var h = Substring(host.lowercased())
        if h.hasPrefix("[") {
            if let close = h.firstIndex(of: "]") { h = h[h.startIndex...close] }
        } else if let colon = h.lastIndex(of: ":") {
            h = h[..<colon]
        }
        return h
    }
}

/// Where a route forwards to, resolved from its upstream's configuration.
public struct UpstreamTarget: Sendable {
    public var origin: String
    public var basePath: String
    public var unixSocket: String?
    public var connectTimeout: TimeAmount
    public var responseTimeout: TimeAmount
    public var idleTimeout: TimeAmount
    public var tls: CurlTLSOptions
    public var httpVersion: CurlHTTPVersion

    public init(upstream: Upstream, unixSocketOverride: String? = nil) {
        self.origin = upstream.isEmbeddedDemo ? "http://localhost" : upstream.origin
        self.basePath = upstream.basePath
        self.unixSocket = unixSocketOverride ?? upstream.unixSocket
        self.connectTimeout = .milliseconds(Int64(upstream.connectTimeoutMs))
        self.responseTimeout = .milliseconds(Int64(upstream.timeoutMs))
        self.idleTimeout = .milliseconds(Int64(upstream.idleTimeoutMs))
        self.tls = CurlTLSOptions(
            caFile: upstream.tls.caFile, clientCertificateFile: upstream.tls.clientCertFile, clientKeyFile: upstream.tls.clientKeyFile)
        switch upstream.httpVersion {
        case .http1_1: self.httpVersion = .http1_1
        case .http2: self.httpVersion = .http2
        case .h2c: self.httpVersion = .http2PriorKnowledge
        }
    }
}

/// A small document the gateway answers itself, prepared once at load.
public struct LocalDocument: Sendable {
    public var contentType: String
    public var body: [UInt8]
    public var cacheControl: String

    public init(contentType: String, body: [UInt8], cacheControl: String) {
        self.contentType = contentType
        self.body = body
        self.cacheControl = cacheControl
    }
}
