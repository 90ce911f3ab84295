import CurlNIO
import GatewayConfig
import GatewayTokens
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// `GatewayHandler` and the connection clocks on an `EmbeddedChannel`, with a fake upstream transfer in place of
/// libcurl: upload and download back-pressure, an early 413, an abort after the response head, and — through the real
/// HTTP/1.1 pipeline — pipelining and the header and idle clocks (issue 10).
@Suite(.serialized) struct ConnectionHandlerTests {
    /// Stands in for a `CurlTransfer`: records what the handler asks of it.
    final class FakeTransfer: UpstreamTransfer {
        let request: CurlRequest
        var resumeSendingCount = 0
        var resumeReceivingCount = 0
        var cancelled = false

        /// Called from inside `resumeSending()` / `resumeReceiving()`, as libcurl may call back at once.
        var onResumeSending: (() -> Void)?
        var onResumeReceiving: (() -> Void)?

        init(_ request: CurlRequest) { self.request = request }
        func resumeSending() {
            resumeSendingCount += 1
            onResumeSending?()
        }
        func resumeReceiving() {
            resumeReceivingCount += 1
            onResumeReceiving?()
        }
        func cancel() { cancelled = true }
    }

    /// Counts the reads that reach the socket end of the pipeline.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var count = 0
        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }

    static func policy(limits: String = "{}") throws -> ProxyPolicy {
        let json = """
            {"limits": \(limits), "upstreams": {"app": {"url": "http://127.0.0.1:9"}},
             "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}]}
            """
        let configuration = try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:])
        return ProxyPolicy(
            configuration: configuration, verifier: TokenVerifier(issuers: []),
            targets: ["app": UpstreamTarget(upstream: configuration.upstreams[0])])
    }

    /// One client connection. `wired`: raw bytes through the clocks, NIO's HTTP/1.1 codec and pipelining handler, as
    /// in the gateway; otherwise request parts straight into the handler, behind a read counter.
    final class Connection {
        let channel = EmbeddedChannel()
        let watcher: CurlReadinessWatcher
        let loop: LoopContext
        let reads = ReadCounter()
        private(set) var handler: GatewayHandler!
        var transfers: [FakeTransfer] = []

        init(policy: ProxyPolicy, wired: Bool = false, headerTimeoutMs: Int64 = 1000, idleTimeoutMs: Int64 = 1000) throws {
            watcher = try CurlReadinessWatcher()
            let driver = CurlLoopDriver(eventLoop: channel.embeddedEventLoop, watcher: watcher)
            loop = LoopContext(driver: driver, policy: policy, tokenCacheEntries: 16, leeway: 30)
            handler = GatewayHandler(loop: loop, clock: { 1000 }) { [unowned self] request, _ in
                let transfer = FakeTransfer(request)
                self.transfers.append(transfer)
                return transfer
            }
            let sync = channel.pipeline.syncOperations
            if wired {
                let clocks = IdleConnectionHandler(
                    headerTimeout: .milliseconds(headerTimeoutMs), idleTimeout: .milliseconds(idleTimeoutMs), loop: loop,
                    accessLog: .off)
                try sync.addHandler(clocks)
                try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
                let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                try sync.addHandler(clocks.boundaries(), position: .after(decoder))
            } else {
                try sync.addHandler(reads)
            }
            try sync.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        func finish() {
            _ = try? channel.finish()
            watcher.shutdown()
        }

        func send(_ part: HTTPServerRequestPart) throws { try channel.writeInbound(part) }
        func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

        func written() throws -> [HTTPServerResponsePart] {
            var parts: [HTTPServerResponsePart] = []
            while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) { parts.append(part) }
            return parts
        }

        /// The bytes written on a wired connection.
        func wire() throws -> String {
            var out = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: buffer) }
            return out
        }

        /// The upstream answers `transfer` with 200 and `body`, and completes.
        func answer(_ transfer: FakeTransfer, _ body: String = "ok") {
            handler.upstream(
                transfer,
                didReceiveHead: CurlResponseHead(
                    status: 200, headers: [CurlHeader(name: "Content-Length", value: String(body.utf8.count))]))
            _ = Array(body.utf8).withUnsafeBytes { handler.upstream(transfer, didReceiveBodyBytes: $0) }
            handler.upstreamDidFinishBatch(transfer)
            handler.upstream(transfer, didCompleteWith: .success(()))
        }

        /// The upstream pulls up to `count` body bytes.
        func pull(_ transfer: FakeTransfer, _ count: Int) -> CurlUploadChunk {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
            defer { buffer.deallocate() }
            return handler.upstream(transfer, fillRequestBody: buffer)
        }
    }

    static func head(_ method: HTTPMethod, _ uri: String = "/x", _ headers: [(String, String)] = []) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders([("Host", "gw.test")] + headers))
    }

    // MARK: - Back-pressure

    @Test func uploadBackPressureHoldsReadsUntilTheUpstreamDrains() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.head(.POST, "/up", [("Content-Length", "1000000")])))
        let transfer = try #require(c.transfers.first)
        #expect(transfer.request.body == .length(1_000_000))
        // libcurl asks before anything arrived: told to wait, and woken by the first bytes.
        #expect(c.pull(transfer, 1024) == .pause)
        let part = ByteBuffer(repeating: 0x61, count: 64 * 1024)
        try c.send(.body(part))
        #expect(transfer.resumeSendingCount == 1)
        for _ in 0..<4 { try c.send(.body(part)) }  // 320 KiB queued: above the high watermark
        let before = c.reads.count
        c.channel.read()
        #expect(c.reads.count == before, "reading continued with the upload queue full")
        // The upstream drains the queue down to the low watermark: the held read goes out.
        while c.reads.count == before {
            guard case .bytes = c.pull(transfer, 64 * 1024) else {
                Issue.record("queue ran dry")
                return
            }
        }
        #expect(c.reads.count == before + 1)
    }

    @Test func theUpstreamMayCallBackFromInsideAResume() throws {
        // libcurl's curl_easy_pause delivers at once: a fill from inside resumeSending, body bytes from inside
        // resumeReceiving. (An exchange mutated across such a call traps on Swift's exclusivity check.)
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.head(.POST, "/up", [("Content-Length", "10")])))
        let transfer = try #require(c.transfers.first)
        var pulled: [CurlUploadChunk] = []
        transfer.onResumeSending = { pulled.append(c.pull(transfer, 64)) }
        #expect(c.pull(transfer, 64) == .pause)
        try c.send(.body(ByteBuffer(string: "0123456789")))
        #expect(pulled == [.bytes(10)])
        #expect(c.pull(transfer, 64) == .pause)
        try c.send(.end(nil))
        #expect(pulled == [.bytes(10), .end])

        c.handler.upstream(transfer, didReceiveHead: CurlResponseHead(status: 200, headers: []))
        c.channel.isWritable = false
        _ = Array("abc".utf8).withUnsafeBytes { c.handler.upstream(transfer, didReceiveBodyBytes: $0) }
        var delivered: [CurlBodyDisposition] = []
        transfer.onResumeReceiving = {
            delivered.append(Array("abc".utf8).withUnsafeBytes { c.handler.upstream(transfer, didReceiveBodyBytes: $0) })
        }
        c.channel.isWritable = true
        c.channel.pipeline.fireChannelWritabilityChanged()
        #expect(delivered == [.consumed])
    }

    @Test func responseBackPressurePausesTheUpstreamUntilWritable() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.head(.GET)))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(transfer, didReceiveHead: CurlResponseHead(status: 200, headers: []))
        c.channel.isWritable = false
        let paused = Array("abc".utf8).withUnsafeBytes { c.handler.upstream(transfer, didReceiveBodyBytes: $0) }
        #expect(paused == .pause)
        c.channel.isWritable = true
        c.channel.pipeline.fireChannelWritabilityChanged()
        #expect(transfer.resumeReceivingCount == 1)
        let consumed = Array("abc".utf8).withUnsafeBytes { c.handler.upstream(transfer, didReceiveBodyBytes: $0) }
        #expect(consumed == .consumed)
    }

    // MARK: - Answers of the gateway's own

    @Test func earlyTooLargeChunkedBodyAnswers413AndCancels() throws {
        let c = try Connection(policy: try Self.policy(limits: #"{"max_body_bytes": 1024}"#))
        defer { c.finish() }
        try c.send(.head(Self.head(.POST, "/up", [("Transfer-Encoding", "chunked")])))
        let transfer = try #require(c.transfers.first)
        try c.send(.body(ByteBuffer(repeating: 0x61, count: 600)))
        #expect(try c.written().isEmpty)
        try c.send(.body(ByteBuffer(repeating: 0x61, count: 600)))
        let answer = KeyRefetchWaitTests.summary(try c.written())
        #expect(answer.status == 413 && answer.reason == "body_too_large" && answer.closes && answer.ended)
        #expect(transfer.cancelled)
        #expect(!c.channel.isActive)
        // The cancelled transfer's late events change nothing.
        c.handler.upstream(transfer, didReceiveHead: CurlResponseHead(status: 200, headers: []))
        #expect(c.pull(transfer, 16) == .pause)
    }

    @Test func upstreamFailureAfterTheResponseHeadAbortsTheConnection() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.head(.GET, "/download")))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(
            transfer,
            didReceiveHead: CurlResponseHead(
                status: 200, headers: [CurlHeader(name: "Content-Length", value: "1000")]))
        _ = Array("partial".utf8).withUnsafeBytes { c.handler.upstream(transfer, didReceiveBodyBytes: $0) }
        c.handler.upstreamDidFinishBatch(transfer)
        c.handler.upstream(
            transfer,
            didCompleteWith: .failure(
                CurlTransferError(
                    code: .connectionReset, curlCode: 56, message: "reset", receivedHead: true)))
        let parts = try c.written()
        #expect(parts.count == 2)  // head and body, never an end: a truncated response must not look complete
        if case .head(let head)? = parts.first { #expect(head.status == .ok) } else { Issue.record("no head") }
        #expect(!c.channel.isActive)
    }

    @Test func upstreamFailureBeforeTheHeadIsAnswered502AndKeepsTheConnection() throws {
        let c = try Connection(policy: try Self.policy())
        defer { c.finish() }
        try c.send(.head(Self.head(.GET)))
        try c.send(.end(nil))
        let transfer = try #require(c.transfers.first)
        c.handler.upstream(
            transfer,
            didCompleteWith: .failure(
                CurlTransferError(
                    code: .couldNotConnect, curlCode: 7, message: "refused", receivedHead: false)))
        let answer = KeyRefetchWaitTests.summary(try c.written())
        #expect(answer.status == 502 && answer.reason == "upstream_unavailable" && !answer.closes)
        #expect(c.channel.isActive)
    }

    // MARK: - Pipelining and the clocks (through NIO's HTTP/1.1 pipeline)

    static let get1 = "GET /first HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    static let get2 = "GET /second HTTP/1.1\r\nHost: gw.test\r\n\r\n"

    @Test func pipelinedRequestsAreAnsweredInOrderAndTheIdleClockWaitsForTheLast() throws {
        let c = try Connection(policy: try Self.policy(), wired: true)
        defer { c.finish() }
        try c.send(Self.get1 + Self.get2)
        #expect(c.transfers.map(\.request.requestTarget) == ["/first"])  // the second waits for the first answer
        c.answer(c.transfers[0], "one")
        #expect(c.transfers.map(\.request.requestTarget) == ["/first", "/second"])
        // The second answer takes longer than the idle clock: the connection stays.
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2000))
        #expect(c.channel.isActive)
        c.answer(c.transfers[1], "two")
        let wire = try c.wire()
        #expect(wire.contains("\r\n\r\none") && wire.hasSuffix("\r\n\r\ntwo"), "\(wire)")
        #expect(wire.hasPrefix("HTTP/1.1 200 OK") && wire.contains("oneHTTP/1.1 200 OK"))  // in order, back to back
        // Now idle: closed silently after idle_timeout_ms.
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(c.channel.isActive)
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
        #expect(!c.channel.isActive)
        #expect(try c.wire().isEmpty)
    }

    @Test func pipelinedLateBodyIsNotTakenForASlowHead() throws {
        let c = try Connection(policy: try Self.policy(), wired: true)
        defer { c.finish() }
        try c.send(Self.get1 + "POST /second HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\n")
        c.answer(c.transfers[0], "one")
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1200))
        try c.send("hello")
        #expect(c.channel.isActive)
        let upload = c.transfers[1]
        #expect(upload.request.body == .length(5))
        c.answer(upload, "two")
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1500))
        let wire = try c.wire()
        #expect(!wire.contains("408"), "\(wire)")
        #expect(wire.hasSuffix("two"))
        #expect(!c.channel.isActive)  // the idle clock, silently
    }

    @Test func shutdownClosesAfterTheAnswerInHand() throws {  // ChannelShouldQuiesceEvent, the drain on SIGTERM
        let c = try Connection(policy: try Self.policy(), wired: true)
        defer { c.finish() }
        try c.send(Self.get1 + Self.get2)
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(c.channel.isActive)
        c.answer(c.transfers[0], "one")
        let wire = try c.wire()
        #expect(wire.contains("Connection: close") && wire.hasSuffix("one"))
        #expect(!c.channel.isActive)
        #expect(c.transfers.count == 1)  // the pipelined second request is never answered

        let idle = try Connection(policy: try Self.policy(), wired: true)
        defer { idle.finish() }
        idle.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!idle.channel.isActive)
    }

    @Test func pipelinedRejectionsAreAnsweredInOrderWithoutRecursion() throws {
        // 200 pipelined requests the gateway answers at once (404): one drain, in order.
        let c = try Connection(policy: try Self.policy(limits: "{}"), wired: true)
        defer { c.finish() }
        let many = String(repeating: "GET /%2F HTTP/1.1\r\nHost: gw.test\r\n\r\n", count: 200)
        try c.send(Self.get1 + many + Self.get2)
        c.answer(c.transfers[0], "one")
        let wire = try c.wire()
        var rest = wire[...]
        var statuses: [Substring] = []
        while let range = rest.firstRange(of: "HTTP/1.1 ") {
            statuses.append(rest[range.upperBound...].prefix(3))
            rest = rest[range.upperBound...]
        }
        #expect(statuses.count == 201 && statuses.first == "200" && statuses.dropFirst().allSatisfy { $0 == "400" })
        #expect(c.transfers.map(\.request.requestTarget) == ["/first", "/second"])
        c.answer(c.transfers[1], "two")
        #expect((try c.wire()).hasSuffix("two"))
    }

    static let smuggled = "GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"

    @Test func aHugeChunkSizeIsRefused413BeforeTheDecoderReadsIt() throws {
        let c = try Connection(policy: try Self.policy(limits: #"{"max_body_bytes": 1048576}"#), wired: true)
        defer { c.finish() }
        try c.send("POST /up HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc" + Self.smuggled)
        let wire = try c.wire()
        #expect(wire.hasPrefix("HTTP/1.1 413") && wire.contains("body_too_large"), "\(wire)")
        #expect(!c.channel.isActive)
        #expect(c.transfers.count == 1 && c.transfers[0].cancelled)
        #expect(c.transfers.allSatisfy { $0.request.requestTarget != "/smuggled" })
    }

    @Test func aMalformedChunkLineIsRefused400() throws {
        let c = try Connection(policy: try Self.policy(), wired: true)
        defer { c.finish() }
        try c.send("POST /up HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n" + Self.smuggled)
        let wire = try c.wire()
        #expect(wire.hasPrefix("HTTP/1.1 400") && wire.contains("request_malformed"), "\(wire)")
        #expect(!c.channel.isActive)
        #expect(c.transfers.count == 1 && c.transfers[0].cancelled)
    }

    @Test func aPipelinedHugeChunkIsRefusedAfterTheAnswerBeforeIt() throws {
        let c = try Connection(policy: try Self.policy(limits: #"{"max_body_bytes": 1048576}"#), wired: true)
        defer { c.finish() }
        try c.send(Self.get1 + "POST /up HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n")
        let before = try c.wire()
        #expect(c.channel.isActive && before.isEmpty)  // the first answer is not replaced
        c.answer(c.transfers[0], "one")
        let wire = try c.wire()
        #expect(wire.hasPrefix("HTTP/1.1 200 OK") && wire.contains("oneHTTP/1.1 413"), "\(wire)")
        #expect(!c.channel.isActive)
        // Its head was decided in turn (a transfer started), then the queued refusal cancelled it: the upstream never
        // sees that body complete.
        #expect(c.transfers.count == 2 && c.transfers[1].cancelled)
    }

    @Test func slowHeadGets408AfterTheHeaderClock() throws {
        let c = try Connection(policy: try Self.policy(), wired: true)
        defer { c.finish() }
        try c.send(Self.get1)
        c.answer(c.transfers[0])
        _ = try c.wire()
        try c.send("GET /slow HTTP/1.1\r\nHo")
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
        try c.send("st: gw")
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(399))
        let early = try c.wire()
        #expect(c.channel.isActive && early.isEmpty)  // a total for the head, from its first byte
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
        let wire = try c.wire()
        #expect(wire.hasPrefix("HTTP/1.1 408 Request Timeout") && wire.contains("request_timeout"))
        #expect(!c.channel.isActive)
        #expect(c.transfers.count == 1)
    }

    @Test func aHeadArrivingInOneReadArmsNoHeaderClock() throws {
        let c = try Connection(policy: try Self.policy(), wired: true, headerTimeoutMs: 100, idleTimeoutMs: 10_000)
        defer { c.finish() }
        try c.send(Self.get1)
        // The upstream is slow: no clock runs while the request is outstanding.
        c.channel.embeddedEventLoop.advanceTime(by: .milliseconds(5000))
        #expect(c.channel.isActive)
        c.answer(c.transfers[0])
        let wire = try c.wire()
        #expect(wire.hasSuffix("ok"))
    }
}
