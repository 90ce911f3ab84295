import CurlNIO
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

// MARK: - byte pattern

/// Byte `i` of every test stream is `i % 251`; chunks are multiples of 251 bytes so one buffer serves all offsets.
enum Pattern {
    static let period = 251
    static let chunk: [UInt8] = (0..<(251 * 1024)).map { UInt8($0 % 251) }

    /// Whether `bytes`, found at stream offset `offset`, match the pattern.
    static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        var done = 0
        return self.chunk.withUnsafeBytes { pattern in
            while done < bytes.count {
                let start = (offset + done) % self.period
                let n = min(bytes.count - done, pattern.count - start)
                if memcmp(bytes.baseAddress! + done, pattern.baseAddress! + start, n) != 0 { return false }
                done += n
            }
            return true
        }
    }

    /// Copies pattern bytes for stream offset `offset` into `buffer`.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        var done = 0
        self.chunk.withUnsafeBytes { pattern in
            while done < buffer.count {
                let start = (offset + done) % self.period
                let n = min(buffer.count - done, pattern.count - start)
                (buffer.baseAddress! + done).copyMemory(from: pattern.baseAddress! + start, byteCount: n)
                done += n
            }
        }
    }
}

// MARK: - test HTTP server

/// Routes (path before `?`):
/// - `/bytes/N`: N pattern bytes, Content-Length, honouring back-pressure
/// - `/status/NNN`: that status, no body
/// - `/head`: Content-Length 1234 (for HEAD)
/// - `/stall-head`: never answers
/// - `/stall-body`: head (Content-Length 1000) + 10 bytes, then silence
/// - `/close-body`: head (Content-Length 1000) + 10 bytes, then close
/// - `/close-head`: closes without answering
/// - `/trailers`: chunked "abc" with a trailer
/// - `/early-hints`: 103 with a Link header, then 201 "done"
/// - `/then-close`: answers "ok" (keep-alive), then closes the idle connection 30 ms later
/// - `/delay/MS`: small body after MS milliseconds
/// - anything else: echo — x-method, x-target, x-body-count, x-body-ok headers; body lists request headers
final class TestServer: Sendable {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    let acceptedConnections: Counter
    let unixPath: String?

    var port: Int { self.channel.localAddress!.port! }
    var origin: String { self.unixPath == nil ? "http://127.0.0.1:\(self.port)" : "http://localhost" }

    private init(group: MultiThreadedEventLoopGroup, channel: any Channel, counter: Counter, unixPath: String?) {
        self.group = group
        self.channel = channel
        self.acceptedConnections = counter
        self.unixPath = unixPath
    }

    static func start(unixSocket: Bool = false) async throws -> TestServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let counter = Counter()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                counter.increment()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(TestHTTPHandler())
                }
            }
        let channel: any Channel
        var path: String?
        if unixSocket {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("curlnio-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            path = dir.appendingPathComponent("s.sock").path
            channel = try await bootstrap.bind(unixDomainSocketPath: path!).get()
        } else {
            channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        }
        let server = TestServer(group: group, channel: channel, counter: counter, unixPath: path)
        return server
    }

    func stop() async throws {
        try await self.channel.close()
        try await self.group.shutdownGracefully()
        if let unixPath {
            try? FileManager.default.removeItem(atPath: (unixPath as NSString).deletingLastPathComponent)
        }
    }
}

final class Counter: Sendable {
    private let value = NIOLockedValueBox(0)
    func increment() { self.value.withLockedValue { $0 += 1 } }
    var current: Int { self.value.withLockedValue { $0 } }
}

final class TestHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?
    private var bodyCount = 0
    private var bodyOK = true
    // streaming state for /bytes
    private var remaining = 0
    private var streaming = false
    private static let chunkBuffer = ByteBuffer(bytes: Pattern.chunk)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.bodyCount = 0
            self.bodyOK = true
        case .body(let buffer):
            let ok = buffer.withUnsafeReadableBytes { Pattern.matches($0, at: self.bodyCount) }
            self.bodyOK = self.bodyOK && ok
            self.bodyCount += buffer.readableBytes
        case .end:
            self.respond(context: context)
        }
    }

    private func path() -> String {
        let uri = self.head!.uri
        return String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }

    private func respond(context: ChannelHandlerContext) {
        let head = self.head!
        let path = self.path()
        let parts = path.split(separator: "/").map(String.init)
        switch parts.first {
        case "bytes":
            let n = Int(parts[1])!
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: String(n))
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            self.remaining = n
            self.streaming = true
            self.pump(context: context)
        case "status":
            let status = HTTPResponseStatus(statusCode: Int(parts[1])!)
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: status))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        case "head":
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: "1234")
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: 0x41, count: 1234)))), promise: nil)
            }
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        case "stall-head":
            break
        case "stall-body", "close-body":
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: "1000")
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: 0x42, count: 10)))), promise: nil)
            if parts.first == "close-body" {
                let loop = context.eventLoop
                let channel = context.channel
                loop.scheduleTask(in: .milliseconds(20)) { channel.close(promise: nil) }
            }
        case "close-head":
            context.close(promise: nil)
        case "trailers":
            // no content-length: NIO frames it chunked and sends the trailers after the last chunk
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .ok))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "abc")))), promise: nil)
            var trailers = HTTPHeaders()
            trailers.add(name: "x-checksum", value: "123")
            context.writeAndFlush(self.wrapOutboundOut(.end(trailers)), promise: nil)
        case "early-hints":
            var hints = HTTPHeaders()
            hints.add(name: "link", value: "</style.css>; rel=preload")
            context.write(
                self.wrapOutboundOut(
                    .head(.init(version: .http1_1, status: .custom(code: 103, reasonPhrase: "Early Hints"), headers: hints))), promise: nil)
            context.flush()
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: "4")
            headers.add(name: "x-final", value: "yes")
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .created, headers: headers))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "done")))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        case "then-close":
            // a normal keep-alive response, then the server drops the idle connection
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: "2")
            headers.add(name: "x-body-count", value: String(self.bodyCount))
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            let channel = context.channel
            context.eventLoop.scheduleTask(in: .milliseconds(30)) { channel.close(promise: nil) }
        case "delay":
            let ms = Int64(parts[1])!
            let channel = context.channel
            context.eventLoop.scheduleTask(in: .milliseconds(ms)) {
                var headers = HTTPHeaders()
                headers.add(name: "content-length", value: "5")
                channel.write(HTTPServerResponsePart.head(.init(version: .http1_1, status: .ok, headers: headers)), promise: nil)
                channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello"))), promise: nil)
                channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
            }
        default:
            var body = ""
            for (name, value) in head.headers {
                body += "\(name): \(value)\n"
            }
            var headers = HTTPHeaders()
            headers.add(name: "x-method", value: head.method.rawValue)
            headers.add(name: "x-target", value: head.uri)
            headers.add(name: "x-body-count", value: String(self.bodyCount))
            headers.add(name: "x-body-ok", value: self.bodyOK ? "1" : "0")
            headers.add(name: "content-length", value: String(body.utf8.count))
            context.write(self.wrapOutboundOut(.head(.init(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    private func pump(context: ChannelHandlerContext) {
        while self.remaining > 0 && context.channel.isWritable {
            let n = min(self.remaining, Self.chunkBuffer.readableBytes)
            let slice = Self.chunkBuffer.getSlice(at: 0, length: n)!
            self.remaining -= n
            context.write(self.wrapOutboundOut(.body(.byteBuffer(slice))), promise: nil)
        }
        if self.remaining == 0 && self.streaming {
            self.streaming = false
            context.write(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if self.streaming && context.channel.isWritable {
            self.pump(context: context)
        }
        context.fireChannelWritabilityChanged()
    }
}

// MARK: - client fixture

/// An event loop group with its curl drivers.
final class CurlFixture: Sendable {
    let group: MultiThreadedEventLoopGroup
    let curl: CurlDriverGroup
    var loop: any EventLoop { self.group.next() }

    init(threads: Int = 1) throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.curl = try CurlDriverGroup(group: self.group)
    }

    func stop() async throws {
        await self.curl.shutdown()
        try await self.group.shutdownGracefully()
    }

    /// Starts `request` on `loop` and waits for completion.
    func run(
        _ request: CurlRequest, delegate: RecordingDelegate, on loop: (any EventLoop)? = nil
    ) async throws
        -> Result<Void, CurlTransferError>
    {
        let loop = loop ?? delegate.eventLoop
        let curl = self.curl
        try await loop.submit {
            delegate.transfer = curl.driver(for: loop).start(request, delegate: delegate)
        }.get()
        return try await delegate.done.futureResult.get()
    }
}

/// Runs `body` with a fresh fixture and server, tearing both down afterwards.
func withFixture(
    unixSocket: Bool = false, threads: Int = 1,
    _ body: (CurlFixture, TestServer) async throws -> Void
) async throws {
    let server = try await TestServer.start(unixSocket: unixSocket)
    let fixture = try CurlFixture(threads: threads)
    do {
        try await body(fixture, server)
    } catch {
        try? await fixture.stop()
        try? await server.stop()
        throw error
    }
    try await fixture.stop()
    try await server.stop()
}

// MARK: - delegate

/// Records everything; optionally pauses downloads and produces uploads. Only touched on its event loop (tests read
/// it after `done` completed, which orders the accesses).
final class RecordingDelegate: CurlTransferDelegate, @unchecked Sendable {
    let eventLoop: any EventLoop
    let done: EventLoopPromise<Result<Void, CurlTransferError>>
    var transfer: CurlTransfer?

    var head: CurlResponseHead?
    var headCount = 0
    var body: [UInt8] = []
    var keepBody = true
    var received = 0
    var patternOK = true
    var verifyPattern = false
    var bodyBeforeHead = false
    var batches = 0
    var completions = 0
    var eventsAfterCompletion = 0

    /// Return `.pause` on every n-th body delivery (0: never); resumes from a later `execute`.
    var pauseEvery = 0
    private var bodyCalls = 0
    private var justPaused = false
    var pauses = 0

    /// Upload: total bytes (pattern), max per fill, pause every n-th fill.
    var uploadTotal = 0
    var uploadMaxChunk = 16 * 1024
    var uploadPauseEvery = 0
    var uploaded = 0
    private var fillCalls = 0
    var uploadPauses = 0
    /// When set, paused uploads resume after this delay instead of on the next tick.
    var uploadResumeDelay: TimeAmount?

    /// Called on each body delivery (after accounting); used to cancel mid-stream.
    var onBody: ((RecordingDelegate) -> Void)?
    var onHead: ((RecordingDelegate) -> Void)?
    var onFill: ((RecordingDelegate) -> Void)?
    var onBatch: ((RecordingDelegate) -> Void)?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.done = eventLoop.makePromise()
    }

    var bodyString: String { String(decoding: self.body, as: UTF8.self) }

    func header(_ name: String) -> String? {
        self.head?.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveHead head: CurlResponseHead) {
        if self.completions > 0 { self.eventsAfterCompletion += 1 }
        self.head = head
        self.headCount += 1
        self.onHead?(self)
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition {
        if self.completions > 0 { self.eventsAfterCompletion += 1 }
        if self.head == nil { self.bodyBeforeHead = true }
        self.bodyCalls += 1
        if self.pauseEvery > 0 && !self.justPaused && self.bodyCalls % self.pauseEvery == 0 {
            self.justPaused = true
            self.pauses += 1
            self.eventLoop.assumeIsolated().execute {
                transfer.resumeReceiving()
            }
            return .pause
        }
        self.justPaused = false
        if self.verifyPattern && !Pattern.matches(bytes, at: self.received) { self.patternOK = false }
        if self.keepBody { self.body.append(contentsOf: bytes) }
        self.received += bytes.count
        self.onBody?(self)
        return .consumed
    }

    func curlTransfer(_ transfer: CurlTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        self.fillCalls += 1
        self.onFill?(self)
        if self.uploaded >= self.uploadTotal { return .end }
        if self.uploadPauseEvery > 0 && self.fillCalls % self.uploadPauseEvery == 0 {
            self.uploadPauses += 1
            if let delay = self.uploadResumeDelay {
                self.eventLoop.assumeIsolated().scheduleTask(in: delay) { transfer.resumeSending() }
            } else {
                self.eventLoop.assumeIsolated().execute {
                    transfer.resumeSending()
                }
            }
            return .pause
        }
        let n = min(buffer.count, self.uploadMaxChunk, self.uploadTotal - self.uploaded)
        Pattern.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]), at: self.uploaded)
        self.uploaded += n
        return .bytes(n)
    }

    func curlTransferDidFinishBatch(_ transfer: CurlTransfer) {
        if self.completions > 0 { self.eventsAfterCompletion += 1 }
        self.batches += 1
        self.onBatch?(self)
    }

    func curlTransfer(_ transfer: CurlTransfer, didCompleteWith result: Result<Void, CurlTransferError>) {
        self.completions += 1
        // Cancelling from inside our own completion must be a no-op.
        transfer.cancel()
        self.transfer = nil
        if self.completions == 1 {
            self.done.succeed(result)
        }
    }
}

extension Result where Failure == CurlTransferError {
    var errorCode: CurlTransferError.Code? {
        if case .failure(let e) = self { return e.code }
        return nil
    }
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
