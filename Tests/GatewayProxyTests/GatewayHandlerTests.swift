import CurlNIO
import GatewayConfig
import GatewayTokens
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// The connection bugs of issue 10 where the handler (or the policy it asks) decides: a broken chunked body, forbidden
/// trailers, hop-by-hop response fields, and an empty body's length.
@Suite(.serialized) struct GatewayHandlerTests {
    typealias Harness = KeyRefetchWaitTests.Harness

    /// One public route to an upstream that is never reached in these tests.
    static func policy() throws -> ProxyPolicy {
        let json = """
            {"upstreams": {"app": {"url": "http://127.0.0.1:9"}}, "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}]}
            """
        let configuration = try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:])
        return ProxyPolicy(
            configuration: configuration, verifier: TokenVerifier(issuers: []),
            targets: ["app": UpstreamTarget(upstream: configuration.upstreams[0])])
    }

    static func head(_ method: HTTPMethod, _ headers: [(String, String)] = []) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: "/upload")
        head.headers.add(name: "Host", value: "gw.test")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        return head
    }

    static func forwarded(_ head: HTTPRequestHead) throws -> CurlRequest? {
        let policy = try policy()
        var route: Int? = nil
        let decision = policy.decide(
            head: head, body: policy.requestBody(head.headers), requestID: "r", clientAddress: nil,
            cache: VerifiedTokenCache(capacity: 4), revocations: RevokedSessions(), now: 1000, matchedRoute: &route)
        guard case .forward(let forward) = decision else { return nil }
        return forward.request
    }

    // MARK: - Empty bodies

    @Test func emptyBodyKeepsItsLengthOnMethodsThatCarryOne() throws {  // issue 10: POST + CL 0 reached as neither
        for method in [HTTPMethod.POST, .PUT, .PATCH] {
            for headers in [[("Content-Length", "0")], []] {
                let request = try #require(try Self.forwarded(Self.head(method, headers)))
                #expect(request.body == .none)
                #expect(request.headers.filter { $0.name.lowercased() == "content-length" }.map(\.value) == ["0"], "\(method)")
            }
        }
        // GET and HEAD never get one; other methods only when the client sent one.
        for (method, headers, expected) in [
            (HTTPMethod.GET, [("Content-Length", "0")], 0), (.HEAD, [], 0), (.DELETE, [], 0),
            (.DELETE, [("Content-Length", "0")], 1),
        ] {
            let request = try #require(try Self.forwarded(Self.head(method, headers)))
            #expect(request.headers.filter { $0.name.lowercased() == "content-length" }.count == expected, "\(method)")
        }
        // A real body is framed by libcurl alone.
        let upload = try #require(try Self.forwarded(Self.head(.POST, [("Content-Length", "5")])))
        #expect(upload.body == .length(5) && !upload.headers.contains { $0.name.lowercased() == "content-length" })
    }

    // MARK: - Response headers

    @Test func hopByHopResponseHeadersEndAtTheGateway() {  // issue 10, RFC 9110 §7.6.1
        let upstream = [
            CurlHeader(name: "Content-Type", value: "text/plain"), CurlHeader(name: "Connection", value: "X-Hop, keep-alive"),
            CurlHeader(name: "x-hop", value: "secret"), CurlHeader(name: "Keep-Alive", value: "timeout=5"),
            CurlHeader(name: "Proxy-Authenticate", value: "Basic realm=\"up\""), CurlHeader(name: "Connection", value: " x-other ,"),
            CurlHeader(name: "X-Other", value: "1"), CurlHeader(name: "Trailer", value: "X-T"), CurlHeader(name: "Upgrade", value: "h2c"),
            CurlHeader(name: "Proxy-Authorization", value: "x"), CurlHeader(name: "Proxy-Connection", value: "keep-alive"),
            CurlHeader(name: "Transfer-Encoding", value: "chunked"), CurlHeader(name: "TE", value: "trailers"),
            CurlHeader(name: "X-Hopper", value: "kept"), CurlHeader(name: "Content-Length", value: "2"),
        ]
        let out = GatewayHandler.clientResponseHeaders(upstream)
        #expect(out.map(\.name) == ["Content-Type", "X-Hopper", "Content-Length"])
        #expect(GatewayHandler.clientResponseHeaders([CurlHeader(name: "A", value: "1")]).map(\.name) == ["A"])
    }

    // MARK: - A broken request body

    @Test func decoderErrorMidUploadIsAnswered400AndCloses() throws {  // issue 10: malformed chunk lines
        let harness = try Harness(policy: try Self.policy())
        defer { harness.finish() }
        try harness.send(.head(Self.head(.POST, [("Transfer-Encoding", "chunked")])))
        try harness.send(.body(ByteBuffer(string: "hello")))
        harness.channel.pipeline.fireErrorCaught(HTTPParserError.invalidChunkSize)
        harness.channel.embeddedEventLoop.run()
        let answer = KeyRefetchWaitTests.summary(try harness.written())
        #expect(answer.status == 400 && answer.reason == "request_malformed" && answer.closes && answer.ended)
        #expect(!harness.channel.isActive)
    }

    @Test func forbiddenTrailersAreAnswered400AndClose() throws {  // issue 10: CL / TE inside trailers
        let harness = try Harness(policy: try Self.policy())
        defer { harness.finish() }
        try harness.send(.head(Self.head(.POST, [("Transfer-Encoding", "chunked")])))
        try harness.send(.body(ByteBuffer(string: "hello")))
        try harness.send(.end(HTTPHeaders([("Content-Length", "5")])))
        harness.channel.embeddedEventLoop.run()
        let answer = KeyRefetchWaitTests.summary(try harness.written())
        #expect(answer.status == 400 && answer.reason == "request_malformed" && answer.closes && answer.ended)
        #expect(!harness.channel.isActive)
    }

    @Test func decoderErrorWhileWaitingForKeysIsAnswered() throws {
        let (harness, refetched, _) = try KeyRefetchWaitTests.awaitingRefetch()
        defer { harness.finish() }
        try harness.send(.head(KeyRefetchWaitTests.head(contentLength: 5)))
        harness.channel.pipeline.fireErrorCaught(HTTPParserError.invalidChunkSize)
        harness.channel.embeddedEventLoop.run()
        let answer = KeyRefetchWaitTests.summary(try harness.written())
        #expect(answer.status == 400 && answer.reason == "request_malformed" && answer.closes)
        // The late refetch finds nothing left to decide.
        refetched.succeed(())
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written().isEmpty)
    }
}
