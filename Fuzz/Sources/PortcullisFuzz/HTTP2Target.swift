import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTP2

@testable import GatewayProxy

/// Raw HTTP/2 frames from a client (after the connection preface, which the harness sends) through swift-nio-http2
/// with the gateway's settings and, on every stream, the pieces the data listener adds: the HTTP/1-style codec, the
/// stream head limit, then `GatewayHandler`. `ProbeHandler` (see the request-head target) decides each decoded head
/// with the rich policy and checks what would be forwarded; the handler's own policy forwards nothing, so every
/// stream must be answered by the gateway itself with a 4xx: anything else means a request would have reached
/// libcurl. The first byte chooses how the frames are cut into reads.
let http2Target = FuzzTarget(
    "http2", "swift-nio-http2 server + per-stream codec, head limit and GatewayHandler", setUp: http2SelfTest
) { bytes in
    for status in http2Exchange(bytes) {
        require(
            (100...199).contains(status) || (400...499).contains(status),
            "the reject-only gateway answered a stream with \(status): a request got past the head checks")
    }
}

/// The client's connection preface: the magic, then an empty SETTINGS frame.
private let clientPreface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]

/// A harness that silently stopped reaching the handler would still run "clean": check once that a GET on stream 1
/// (HPACK static-table `:method GET`, `:scheme http`, `:path /` and a literal `:authority: a`) gets its 401.
private func http2SelfTest() {
    let block: [UInt8] = [0x82, 0x86, 0x84, 0x41, 0x01, UInt8(ascii: "a")]
    let headers: [UInt8] = [0, 0, UInt8(block.count), 1, 0x05, 0, 0, 0, 1] + block
    let statuses = ([0] + headers).withUnsafeBytes { http2Exchange($0) }
    require(statuses == [401], "http2 self-test: expected [401], got \(statuses)")
}

/// Collects the probes of a connection's streams (the stream initializer runs on the embedded loop, one at a time).
private final class StreamProbes: @unchecked Sendable {
    var probes: [ProbeHandler] = []
}

/// Runs one input through a new HTTP/2 connection; the statuses the gateway answered its streams with.
private func http2Exchange(_ bytes: UnsafeRawBufferPointer) -> [Int] {
    let fixture = RequestHeadFixture.shared
    var input = FuzzInput(bytes)
    let selector = input.takeByte()
    let channel = EmbeddedChannel(loop: fixture.loop)
    let streams = StreamProbes()
    var settings = NIOHTTP2Handler.ConnectionConfiguration()
    settings.initialSettings = [
        HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
        HTTP2Setting(parameter: .maxHeaderListSize, value: 8192),
    ]
    let http2 = NIOHTTP2Handler(
        mode: .server, eventLoop: channel.eventLoop, connectionConfiguration: settings, streamConfiguration: .init(),
        inboundStreamInitializer: { stream in
            stream.eventLoop.makeCompletedFuture {
                let probe = ProbeHandler(policy: fixture.decidingPolicy)
                streams.probes.append(probe)
                try stream.pipeline.syncOperations.addHandlers([
                    HTTP2FramePayloadToHTTP1ServerCodec(),
                    StreamHeadLimitHandler(maxHeaderBytes: 4096),
                    probe,
                    GatewayHandler(
                        loop: fixture.context, clock: { FuzzKeys.now }, connection: ClientConnection(isHTTP2: true)),
                ])
            }
        })
    do {
        try channel.pipeline.syncOperations.addHandler(http2)
        try channel.connect(to: fixture.clientAddress).wait()
    } catch {
        require(false, "pipeline setup failed: \(error)")
    }
    let data = clientPreface + input.array
    let piece = selector & 0x80 == 0 ? max(data.count, 1) : Int(selector & 0x7F) + 1
    var offset = 0
    while offset < data.count, channel.isActive {
        let end = min(offset + piece, data.count)
        var buffer = channel.allocator.buffer(capacity: end - offset)
        buffer.writeBytes(data[offset..<end])
        _ = try? channel.writeInbound(buffer)
        fixture.loop.run()
        offset = end
    }
    while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
    _ = try? channel.finish()
    fixture.loop.advanceTime(by: .hours(1))
    return streams.probes.flatMap(\.statuses)
}
