import NIOCore
import NIOEmbedded
import NIOHTTP2
import Testing

@testable import GatewayServer

/// The rapid-reset leak (README "Hardening"): a connection cut off by a flood kept every stream channel that got
/// frames during its last read. swift-nio-http2's inline multiplexer keeps those in a list that only
/// `channelReadComplete` empties, and NIO sends no read-complete when the channel closes during the read. These tests
/// count the stream channels still alive once such a connection is gone, so the fix is checked object by object
/// rather than through the process's RSS.
@Suite struct HTTP2ConnectionGuardTests {
    /// Weak references to every stream channel the server created.
    final class Streams: @unchecked Sendable {
        struct Weak { weak var channel: (any Channel)? }
        var all: [Weak] = []
        var alive: Int { all.filter { $0.channel != nil }.count }
    }

    /// Closes the connection on any error, as the gateway's guard did before the fix: no read-complete first.
    final class CloseOnError: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    /// A client preface, its SETTINGS, then `count` streams each opened by a HEADERS frame (GET /, END_STREAM) and
    /// cancelled at once by RST_STREAM: past swift-nio-http2's 200 resets in 30 s, a connection error.
    static func rapidResets(_ count: Int) -> ByteBuffer {
        var bytes = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        func frameHeader(length: Int, type: UInt8, flags: UInt8, stream: UInt32) {
            bytes.writeInteger(UInt8(length >> 16))
            bytes.writeInteger(UInt16(length & 0xFFFF))
            bytes.writeInteger(type)
            bytes.writeInteger(flags)
            bytes.writeInteger(stream)
        }
        frameHeader(length: 0, type: 0x4, flags: 0, stream: 0)  // SETTINGS, empty
        // HPACK: :method GET, :path /, :scheme http (static table), :authority "a" (literal, indexed name 1).
        let block: [UInt8] = [0x82, 0x84, 0x86, 0x41, 0x01, 0x61]
        for i in 0..<count {
            let stream = UInt32(1 + 2 * i)
            frameHeader(length: block.count, type: 0x1, flags: 0x5, stream: stream)  // HEADERS, END_STREAM|END_HEADERS
            bytes.writeBytes(block)
            frameHeader(length: 4, type: 0x3, flags: 0, stream: stream)  // RST_STREAM
            bytes.writeInteger(UInt32(0x8))  // CANCEL
        }
        return bytes
    }

    /// Feeds one flood as a single read (no read-complete after it, as NIO does when the read closes the channel)
    /// to a server connection ending in `last`, and returns the stream channels still alive afterwards.
    func streamsAliveAfterFlood(closingWith last: any ChannelHandler) throws -> (alive: Int, created: Int, open: Bool) {
        let channel = EmbeddedChannel()
        let streams = Streams()
        let http2 = NIOHTTP2Handler(
            mode: .server, eventLoop: channel.embeddedEventLoop,
            inboundStreamInitializer: { stream in
                streams.all.append(.init(channel: stream))
                return stream.eventLoop.makeSucceededVoidFuture()
            })
        try channel.pipeline.syncOperations.addHandler(http2)
        try channel.pipeline.syncOperations.addHandler(last)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.pipeline.fireChannelRead(Self.rapidResets(300))
        channel.embeddedEventLoop.run()
        let open = channel.isActive
        _ = try? channel.finish(acceptAlreadyClosed: true)
        return (streams.alive, streams.all.count, open)
    }

    @Test func aConnectionCutOffByAFloodLeavesNoStreamBehind() throws {
        let result = try streamsAliveAfterFlood(closingWith: HTTP2ConnectionGuard(grace: .seconds(1)))
        #expect(!result.open, "the flood is a connection error: the guard closes the connection")
        #expect(result.created > 100, "the flood opened streams before it was cut off")
        #expect(result.alive == 0, "\(result.alive) of \(result.created) stream channels outlived their connection")
    }

    /// What the guard works around, in swift-nio-http2 1.46: without the extra read-complete the streams of the last
    /// read stay allocated. When this fails after an upgrade, the multiplexer releases them itself and the guard's
    /// `fireChannelReadComplete` can go.
    @Test func withoutTheReadCompleteTheStreamsOfTheLastReadLeak() throws {
        let result = try streamsAliveAfterFlood(closingWith: CloseOnError())
        #expect(!result.open)
        #expect(result.alive > 0)
    }
}
