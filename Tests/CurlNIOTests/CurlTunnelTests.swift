import NIOCore
import NIOPosix
import Testing

@testable import CurlNIO

/// Echoes every byte back; with `closeAfter` set, closes once that many bytes came in.
private final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let closeAfter: Int?

    init(closeAfter: Int?) { self.closeAfter = closeAfter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        if let closeAfter, buffer.readableBytes >= closeAfter {
            context.close(promise: nil)
            return
        }
        context.writeAndFlush(data, promise: nil)
    }
}

private func startEchoServer(group: any EventLoopGroup, closeAfter: Int? = nil) async throws -> any Channel {
    try await ServerBootstrap(group: group)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(EchoHandler(closeAfter: closeAfter))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
}

/// Sends `total` pattern bytes through a tunnel (retrying partial and would-block sends from the same buffer) and
/// checks that the echo comes back intact.
private final class EchoClient: CurlTunnelDelegate, @unchecked Sendable {
    let eventLoop: any EventLoop
    let done: EventLoopPromise<String>
    let total: Int
    var tunnel: CurlTunnel?
    var sent = 0
    var received = 0
    var patternOK = true
    var wouldBlockSends = 0
    private let chunk: [UInt8]
    private var chunkOffset = 0
    private var receiveBuffer = [UInt8](repeating: 0, count: 16 * 1024)

    init(eventLoop: any EventLoop, total: Int) {
        self.eventLoop = eventLoop
        self.done = eventLoop.makePromise()
        self.total = total
        self.chunk = Array(Pattern.chunk.prefix(Pattern.period * 256))
    }

    func curlTunnelDidConnect(_ tunnel: CurlTunnel) {
        self.pumpSend(tunnel)
        tunnel.watch(read: true, write: self.sent < self.total)
    }

    func curlTunnel(_ tunnel: CurlTunnel, didFailToConnect error: CurlTransferError) {
        self.done.succeed("connect failed: \(error.code)")
    }

    func curlTunnelIsReadable(_ tunnel: CurlTunnel) {
        while true {
            let result = self.receiveBuffer.withUnsafeMutableBytes { tunnel.receive(into: $0) }
            switch result {
            case .bytes(let n):
                self.receiveBuffer.withUnsafeBytes { raw in
                    if !Pattern.matches(UnsafeRawBufferPointer(rebasing: raw[0..<n]), at: self.received) {
                        self.patternOK = false
                    }
                }
                self.received += n
                if self.received >= self.total {
                    tunnel.close()
                    self.done.succeed("ok")
                    return
                }
            case .wouldBlock:
                return
            case .closed:
                tunnel.close()
                self.done.succeed("closed after \(self.received)")
                return
            case .failed(let error):
                tunnel.close()
                self.done.succeed("failed: \(error.code)")
                return
            }
        }
    }

    func curlTunnelIsWritable(_ tunnel: CurlTunnel) {
        self.pumpSend(tunnel)
        tunnel.watch(read: true, write: self.sent < self.total)
    }

    func curlTunnelWasClosed(_ tunnel: CurlTunnel) {
        self.done.succeed("driver closed")
    }

    private func pumpSend(_ tunnel: CurlTunnel) {
        while self.sent < self.total {
            let n = min(self.chunk.count - self.chunkOffset, self.total - self.sent)
            let result = self.chunk.withUnsafeBytes { raw in
                tunnel.send(UnsafeRawBufferPointer(rebasing: raw[self.chunkOffset..<(self.chunkOffset + n)]))
            }
            switch result {
            case .bytes(let k):
                self.sent += k
                self.chunkOffset = (self.chunkOffset + k) % self.chunk.count
            case .wouldBlock:
                self.wouldBlockSends += 1
                return
            case .closed, .failed:
                return
            }
        }
    }
}

@Suite(.serialized) struct CurlTunnelTests {
    @Test func echoesOneMebibyteBothWays() async throws {
        let fixture = try CurlFixture()
        let server = try await startEchoServer(group: fixture.group)
        let loop = fixture.loop
        let client = EchoClient(eventLoop: loop, total: 4 << 20)
        let request = CurlRequest(
            origin: "http://127.0.0.1:\(server.localAddress!.port!)", requestTarget: "/", method: "GET",
            connectTimeout: .seconds(2))
        let curl = fixture.curl
        try await loop.submit {
            client.tunnel = curl.driver(for: loop).openTunnel(request, delegate: client)
        }.get()
        let outcome = try await client.done.futureResult.get()
        #expect(outcome == "ok")
        #expect(client.patternOK)
        let (tunnels, transfers) = try await loop.submit {
            (curl.driver(for: loop).openTunnelCount, curl.driver(for: loop).activeTransferCount)
        }.get()
        #expect(tunnels == 0)
        #expect(transfers == 0)
        try await server.close()
        try await fixture.stop()
    }

    @Test func refusedConnectionIsReported() async throws {
        let fixture = try CurlFixture()
        // A port that was just free: nothing listens there.
        let server = try await startEchoServer(group: fixture.group)
        let port = server.localAddress!.port!
        try await server.close()
        let loop = fixture.loop
        let client = EchoClient(eventLoop: loop, total: 10)
        let request = CurlRequest(origin: "http://127.0.0.1:\(port)", requestTarget: "/", method: "GET", connectTimeout: .seconds(2))
        let curl = fixture.curl
        try await loop.submit {
            client.tunnel = curl.driver(for: loop).openTunnel(request, delegate: client)
        }.get()
        #expect(try await client.done.futureResult.get() == "connect failed: could_not_connect")
        try await fixture.stop()
    }

    @Test func upstreamCloseIsSeenAsClosed() async throws {
        let fixture = try CurlFixture()
        let server = try await startEchoServer(group: fixture.group, closeAfter: 1)
        let loop = fixture.loop
        let client = EchoClient(eventLoop: loop, total: 1000)
        let request = CurlRequest(
            origin: "http://127.0.0.1:\(server.localAddress!.port!)", requestTarget: "/", method: "GET",
            connectTimeout: .seconds(2))
        let curl = fixture.curl
        try await loop.submit {
            client.tunnel = curl.driver(for: loop).openTunnel(request, delegate: client)
        }.get()
        let outcome = try await client.done.futureResult.get()
        #expect(outcome == "closed after 0" || outcome.hasPrefix("failed"))
        try await server.close()
        try await fixture.stop()
    }

    @Test func shutdownClosesOpenTunnels() async throws {
        let fixture = try CurlFixture()
        let server = try await startEchoServer(group: fixture.group)
        let loop = fixture.loop
        // Never finishes: the echo of 1 byte is less than it waits for.
        let client = EchoClient(eventLoop: loop, total: 1)
        let waiting = EchoClient(eventLoop: loop, total: 0)
        let request = CurlRequest(
            origin: "http://127.0.0.1:\(server.localAddress!.port!)", requestTarget: "/", method: "GET",
            connectTimeout: .seconds(2))
        let curl = fixture.curl
        try await loop.submit {
            client.tunnel = curl.driver(for: loop).openTunnel(request, delegate: client)
        }.get()
        #expect(try await client.done.futureResult.get() == "ok")
        // A second tunnel that only waits to be read, then the driver goes away.
        try await loop.submit {
            waiting.tunnel = curl.driver(for: loop).openTunnel(request, delegate: waiting)
        }.get()
        try await Task.sleep(for: .milliseconds(200))
        await fixture.curl.shutdown()
        let outcome = try await waiting.done.futureResult.get()
        #expect(outcome == "driver closed")
        try await server.close()
        try await fixture.group.shutdownGracefully()
    }
}
