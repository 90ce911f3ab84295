import NIOCore

/// Tells an HTTP/2 client with prior knowledge from an HTTP/1 client on one cleartext port (DESIGN §11) by the
/// connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4), then configures the pipeline behind it for
/// that version and removes itself, passing on every byte it held.
///
/// It decides at the first byte that differs from the preface (HTTP/1) and only after all 24 match (HTTP/2); it
/// never waits for 24 bytes unconditionally, since a complete HTTP/1 request can be shorter (`GET / HTTP/1.1\r\n\r\n`
/// is 18 bytes). Only an HTTP/1 client whose bytes so far are a prefix of the preface waits, and the connection's
/// header clock, in front of the sniffer, still runs for it.
public final class HTTPVersionSniffer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    /// The protocol a connection speaks.
    public enum Version: Sendable, Hashable {
        case http1
        case http2
    }

    /// Adds the handlers for `version` to the pipeline, after the sniffer (`.last` is fine: nothing follows it yet).
    /// Runs on the channel's event loop, inside the read that decided.
    public typealias Configurator = (Version, ChannelPipeline.SynchronousOperations) throws -> Void

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let configure: Configurator
    /// Bytes read before the decision.
    private var held: ByteBuffer?
    private var decided = false

    public init(configure: @escaping Configurator) {
        self.configure = configure
    }

    /// The version `bytes`, the first bytes of a connection, show; nil when they are a proper prefix of the preface
    /// (more bytes are needed).
    public static func classify(_ bytes: some Sequence<UInt8>) -> Version? {
        var matched = 0
        for byte in bytes {
            if byte != preface[matched] { return .http1 }
            matched += 1
            if matched == preface.count { return .http2 }
        }
        return nil
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return context.fireChannelRead(data) }
        var buffer = unwrapInboundIn(data)
        if held == nil {
            held = buffer
        } else {
            held!.writeBuffer(&buffer)
        }
        guard let version = Self.classify(held!.readableBytesView) else { return }
        decided = true
        do {
            try configure(version, context.pipeline.syncOperations)
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        let bytes = held!
        held = nil
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension HTTPVersionSniffer: Sendable {}
