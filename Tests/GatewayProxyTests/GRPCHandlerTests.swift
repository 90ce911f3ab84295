import CurlNIO
import GatewayConfig
import GatewayTokens
import NIOCore
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// `GatewayHandler` with gRPC calls (DESIGN §11), on an `EmbeddedChannel` with a fake upstream: refusals in gRPC
/// form, trailers relayed, Trailers-Only answers, `te: trailers` and `grpc-timeout` handed to the transfer, calls to
/// an HTTP/1.1 upstream refused.
@Suite(.serialized) struct GRPCHandlerTests {
    typealias Connection = ConnectionHandlerTests.Connection

    static func policy() throws -> ProxyPolicy {
        let json = """
            {"upstreams": {"h2": {"url": "http://127.0.0.1:9", "http_version": "h2c"}, "h1": {"url": "http://127.0.0.1:9"}},
             "routes": [{"path_prefix": "/open.Svc", "upstream": "h2", "auth": "none"},
                        {"path_prefix": "/old.Svc", "upstream": "h1", "auth": "none"},
                        {"path_prefix": "/", "upstream": "h2"}],
             "issuers": [{"issuer": "test", "hmac_secret": "0123456789abcdef0123456789abcdef", "algorithms": ["HS256"]}]}
            """
        let configuration = try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:])
        return ProxyPolicy(
            configuration: configuration, verifier: TokenVerifier(issuers: []),
            targets: [
                "h2": UpstreamTarget(upstream: configuration.upstreams[0]), "h1": UpstreamTarget(upstream: configuration.upstreams[1]),
            ])
    }

    static func call(_ path: String, _ extra: [(String, String)] = []) -> HTTPRequestHead {
        HTTPRequestHead(
            version: .http1_1, method: .POST, uri: path,
            headers: HTTPHeaders(
                [("host", "gw.test"), ("content-type", "application/grpc"), ("te", "trailers"), ("transfer-encoding", "chunked")]
                    + extra))
    }

    static func fields(_ headers: HTTPHeaders?) -> [String] {
        (headers ?? HTTPHeaders()).map { "\($0.name): \($0.value)" }
    }

    @Test func aRefusalIsAnsweredInGRPCForm() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/secret.Svc/Do")))
        let parts = try c.written()
        #expect(c.transfers.isEmpty)
        guard parts.count == 2, case .head(let head) = parts[0], case .end(let trailers) = parts[1] else {
            Issue.record("unexpected parts: \(parts)")
            return
        }
        #expect(head.status == .ok)
        #expect(head.headers["content-type"] == ["application/grpc"])
        #expect(head.headers["www-authenticate"] == ["Bearer realm=\"api\""])
        #expect(head.headers["content-length"].isEmpty)
        #expect(Self.fields(trailers) == ["grpc-status: 16", "grpc-message: token_missing"])
    }

    @Test func gRPCWebIsOrdinaryHTTP() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        var head = Self.call("/secret.Svc/Do")
        head.headers.replaceOrAdd(name: "content-type", value: "application/grpc-web+proto")
        try c.send(.head(head))
        guard case .head(let answer) = try c.written().first else {
            Issue.record("no head")
            return
        }
        #expect(answer.status == .unauthorized)
        #expect(answer.headers["content-type"] == ["application/json"])
    }

    @Test func aCallToAnHTTP1UpstreamIsRefusedWithUnavailable() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/old.Svc/Do")))
        let parts = try c.written()
        #expect(c.transfers.isEmpty)
        guard case .end(let trailers) = parts.last else {
            Issue.record("unexpected parts: \(parts)")
            return
        }
        #expect(Self.fields(trailers) == ["grpc-status: 14", "grpc-message: upstream_not_http2"])
    }

    @Test func theTransferGetsHTTP2TrailersTEAndTheDeadline() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/open.Svc/Do", [("grpc-timeout", "250m"), ("x-meta", "m")])))
        let transfer = try #require(c.transfers.first)
        #expect(transfer.request.httpVersion == .http2PriorKnowledge)
        #expect(transfer.request.deadline == .milliseconds(250))
        #expect(transfer.request.body == .chunked)
        let names = transfer.request.headers.map { $0.name.lowercased() }
        #expect(transfer.request.headers.contains(CurlHeader(name: "te", value: "trailers")))
        #expect(names.contains("grpc-timeout") && names.contains("x-meta") && !names.contains("transfer-encoding"))
    }

    @Test func teIsDroppedUnlessItIsExactlyTrailersOnAGRPCCall() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        var head = Self.call("/open.Svc/Do")
        head.headers.replaceOrAdd(name: "te", value: "trailers, deflate")
        try c.send(.head(head))
        try c.send(.end(nil))
        let first = try #require(c.transfers.first)
        #expect(!first.request.headers.contains { $0.name.lowercased() == "te" })
        c.answer(first)
        _ = try c.written()
        // Not a gRPC call: no `te` at all.
        try c.send(
            .head(
                HTTPRequestHead(
                    version: .http1_1, method: .GET, uri: "/open.Svc/x", headers: HTTPHeaders([("host", "a"), ("te", "trailers")]))))
        let second = try #require(c.transfers.last)
        #expect(second !== first)
        #expect(!second.request.headers.contains { $0.name.lowercased() == "te" })
        #expect(second.request.deadline == nil)
    }

    @Test func upstreamTrailersEndTheResponse() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/open.Svc/Do")))
        try c.send(.body(ByteBuffer(bytes: [0, 0, 0, 0, 1, 7])))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(
            transfer,
            didReceiveHead: CurlResponseHead(status: 200, headers: [CurlHeader(name: "content-type", value: "application/grpc")]))
        _ = [UInt8]([0, 0, 0, 0, 1, 8]).withUnsafeBytes { c.handler.upstream(transfer, didReceiveBodyBytes: $0) }
        c.handler.upstream(
            transfer,
            didReceiveTrailers: [
                CurlHeader(name: "grpc-status", value: "0"), CurlHeader(name: "x-trailer", value: "t"),
                CurlHeader(name: "Content-Length", value: "5"), CurlHeader(name: "transfer_encoding", value: "chunked"),
            ])
        c.handler.upstream(transfer, didCompleteWith: .success(()))
        let parts = try c.written()
        guard parts.count == 3, case .head(let head) = parts[0], case .body = parts[1], case .end(let trailers) = parts[2] else {
            Issue.record("unexpected parts: \(parts)")
            return
        }
        #expect(head.headers["content-type"] == ["application/grpc"])
        #expect(Self.fields(trailers) == ["grpc-status: 0", "x-trailer: t"])
    }

    @Test func aTrailersOnlyAnswerEndsWithItsStatusAsTrailers() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/open.Svc/Do")))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(
            transfer,
            didReceiveHead: CurlResponseHead(
                status: 200,
                headers: [
                    CurlHeader(name: "content-type", value: "application/grpc"), CurlHeader(name: "grpc-status", value: "5"),
                    CurlHeader(name: "grpc-message", value: "not found, really"), CurlHeader(name: "x-meta", value: "kept"),
                ]))
        c.handler.upstream(transfer, didCompleteWith: .success(()))
        let parts = try c.written()
        guard parts.count == 2, case .head(let head) = parts[0], case .end(let trailers) = parts[1] else {
            Issue.record("unexpected parts: \(parts)")
            return
        }
        #expect(Self.fields(head.headers) == ["content-type: application/grpc", "x-meta: kept"])
        #expect(Self.fields(trailers) == ["grpc-status: 5", "grpc-message: not found, really"])
    }

    @Test func aDeadlineBeforeTheHeadIsStatus4() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/open.Svc/Do", [("grpc-timeout", "1m")])))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(
            transfer,
            didCompleteWith: .failure(CurlTransferError(code: .deadlineExceeded, curlCode: 0, message: "deadline", receivedHead: false)))
        guard case .end(let trailers) = try c.written().last else {
            Issue.record("no end")
            return
        }
        #expect(Self.fields(trailers) == ["grpc-status: 4", "grpc-message: deadline_exceeded"])
    }

    @Test func aFailureAfterTheHeadEndsTheCallWithAStatusInsteadOfCuttingIt() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.call("/open.Svc/Do", [("grpc-timeout", "1S")])))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(
            transfer,
            didReceiveHead: CurlResponseHead(status: 200, headers: [CurlHeader(name: "content-type", value: "application/grpc")]))
        c.handler.upstream(
            transfer,
            didCompleteWith: .failure(CurlTransferError(code: .deadlineExceeded, curlCode: 0, message: "deadline", receivedHead: true)))
        let parts = try c.written()
        guard case .end(let trailers) = parts.last else {
            Issue.record("unexpected parts: \(parts)")
            return
        }
        #expect(Self.fields(trailers) == ["grpc-status: 4", "grpc-message: deadline_exceeded"])
    }
}
