import NIOCore
import NIOEmbedded
import Testing

@testable import GatewayProxy

/// `FlushCoalescingHandler` on an `EmbeddedChannel`: the flushes of one tick leave as one, at the end of the tick,
/// with every write before them; nothing is lost when the handler goes.
@Suite struct FlushCoalescingHandlerTests {
    /// Counts the flushes that get past the coalescer (it sits before it, nearer the socket).
    final class FlushCounter: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var flushes = 0

        func flush(context: ChannelHandlerContext) {
            flushes += 1
            context.flush()
        }
    }

    func setUp() throws -> (EmbeddedChannel, FlushCounter, FlushCoalescingHandler) {
        let channel = EmbeddedChannel()
        let counter = FlushCounter()
        let coalescer = FlushCoalescingHandler()
        try channel.pipeline.syncOperations.addHandlers([counter, coalescer])
        return (channel, counter, coalescer)
    }

    @Test func flushesOfOneTickLeaveAsOneAtItsEnd() throws {
        let (channel, counter, _) = try setUp()
        for i in 0..<5 {
            channel.write(channel.allocator.buffer(string: "frame \(i);"), promise: nil)
            channel.flush()
        }
        // Nothing has left yet: the flush waits for the end of the tick.
        #expect(counter.flushes == 0)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == 1)
        var written = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written += String(buffer: buffer) }
        #expect(written == "frame 0;frame 1;frame 2;frame 3;frame 4;")
        // The next tick's flush is a flush of its own.
        channel.write(channel.allocator.buffer(string: "later"), promise: nil)
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == 2)
        #expect(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "later")
        _ = try channel.finish()
    }

    @Test func closeSendsWhatWasFlushedFirst() throws {
        let (channel, counter, _) = try setUp()
        channel.write(channel.allocator.buffer(string: "goaway"), promise: nil)
        channel.flush()
        channel.close(promise: nil)
        #expect(counter.flushes == 1)
        #expect(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "goaway")
        // The flush scheduled before the close has nothing left to do.
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == 1)
    }

    @Test func removalFlushesWhatWasAskedFor() throws {
        let (channel, counter, coalescer) = try setUp()
        channel.write(channel.allocator.buffer(string: "pending"), promise: nil)
        channel.flush()
        try channel.pipeline.syncOperations.removeHandler(coalescer).wait()
        #expect(counter.flushes == 1)
        #expect(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "pending")
        // The flush scheduled before the removal finds nothing to do.
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == 1)
        _ = try channel.finish()
    }
}
