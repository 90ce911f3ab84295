/// A WebSocket tunnel's two directions and how it ends, as a value with no I/O (`WebSocketTunnelHandler` performs).
///
/// Each direction is followed by a `WebSocketStream` (frame headers only). The gateway ends a tunnel by writing a
/// close frame into each direction at a frame boundary: the client gets 1008 `token_expired` / `token_revoked`
/// (1001 for the idle timeout and shutdown), the upstream a masked 1001. A direction that sits at a boundary gets its
/// close at once and is still followed afterwards, relaying nothing more, so the peer's answering close is seen and
/// the tunnel can close without waiting out `websocket_close_timeout_ms`; one in the middle of a frame gets it at the
/// frame's end (`WebSocketStream.end(with:)`). A protocol error from one peer (a bad frame header, an oversize
/// control frame) closes both ways with its close code.
struct WebSocketTunnelState: Sendable {
    /// Why the gateway itself ends a tunnel; the raw value is the `reason` of its log line and metric.
    enum Cause: String, Sendable {
        case tokenExpired = "token_expired"
        case tokenRevoked = "token_revoked"
        case idle = "idle_timeout"
        case shutdown = "shutdown"

        /// The close code and reason the client gets.
        var toClient: (code: UInt16, reason: String) {
            switch self {
            case .tokenExpired, .tokenRevoked: (1008, rawValue)
            case .idle, .shutdown: (1001, rawValue)
            }
        }
    }

    /// What to do with bytes that came from one peer.
    struct Relay: Equatable, Sendable {
        /// Relay this many leading bytes to the other peer.
        var forward = 0
        /// The last this many bytes are an incomplete frame header: present them again in front of the next bytes.
        var keep = 0
        /// Then write this frame to the other peer (an injected close).
        var thenToOther: [UInt8]? = nil
        /// Write this frame back to the sender (its own protocol error, or the close due to it at a boundary).
        var toSender: [UInt8]? = nil
        /// The sender broke the protocol: the tunnel is closing.
        var failed: WebSocketProtocolError? = nil
    }

    private(set) var client = WebSocketStream(sender: .client)
    private(set) var upstream = WebSocketStream(sender: .upstream)
    /// A close of the gateway's went (or is due) to the client / the upstream.
    private(set) var closedToClient = false
    private(set) var closedToUpstream = false
    /// Why the tunnel ends, once the gateway decided it (the first cause wins).
    private(set) var reason: String?
    /// False once a close went into that direction directly: its bytes are still followed, never relayed.
    private var relaysClient = true
    private var relaysUpstream = true
    private(set) var fromClient: Int64 = 0
    private(set) var fromUpstream: Int64 = 0

    /// Both peers have sent a close frame (a close handshake, theirs or answering ours).
    var bothClosed: Bool { client.senderClosed && upstream.senderClosed }

    /// Whether the gateway is closing the tunnel (its own close frames are out or due).
    var isClosing: Bool { closedToClient || closedToUpstream }

    /// The gateway's closes went both ways and the client answered: nothing more is owed to it.
    var clientDone: Bool { closedToClient && closedToUpstream && client.senderClosed }

    mutating func receiveFromClient(_ bytes: UnsafeRawBufferPointer) -> Relay {
        fromClient += Int64(bytes.count)
        let step = client.receive(bytes)
        return relay(step, count: bytes.count, fromClient: true)
    }

    mutating func receiveFromUpstream(_ bytes: UnsafeRawBufferPointer) -> Relay {
        fromUpstream += Int64(bytes.count)
        let step = upstream.receive(bytes)
        return relay(step, count: bytes.count, fromClient: false)
    }

    private mutating func relay(_ step: WebSocketStream.Step, count: Int, fromClient: Bool) -> Relay {
        let relays = fromClient ? relaysClient : relaysUpstream
        switch step {
        case .forward(let n):
            return Relay(forward: relays ? n : 0, keep: count - n)
        case .forwardThenInject(let n, let frame):
            if fromClient { closedToUpstream = true } else { closedToClient = true }
            return Relay(forward: relays ? n : 0, thenToOther: frame)
        case .discard:
            return Relay()
        case .fail(let n, let error):
            if reason == nil { reason = error.code }
            var relay = Relay(forward: relays ? n : 0, failed: error)
            // The failing direction is at a boundary after `n` bytes: its close goes right after them. The other
            // direction gets its close at its own next boundary.
            if fromClient {
                relaysClient = false
                if !closedToUpstream {
                    closedToUpstream = true
                    relay.thenToOther = WebSocketCloseFrame.toUpstream(code: error.closeCode)
                }
                if !closedToClient {
                    closedToClient = true
                    relay.toSender = upstream.end(with: WebSocketCloseFrame.toClient(code: error.closeCode, reason: error.code))
                }
            } else {
                relaysUpstream = false
                if !closedToClient {
                    closedToClient = true
                    relay.thenToOther = WebSocketCloseFrame.toClient(code: error.closeCode, reason: error.code)
                }
                if !closedToUpstream {
                    closedToUpstream = true
                    relay.toSender = client.end(with: WebSocketCloseFrame.toUpstream(code: error.closeCode))
                }
            }
            return relay
        }
    }

    /// The gateway ends the tunnel: the close frames to write now (nil: due later at a frame boundary, or already
    /// sent).
    mutating func end(_ cause: Cause) -> (toClient: [UInt8]?, toUpstream: [UInt8]?) {
        if reason == nil { reason = cause.rawValue }
        var out: (toClient: [UInt8]?, toUpstream: [UInt8]?) = (nil, nil)
        if !closedToClient {
            closedToClient = true
            let (code, text) = cause.toClient
            out.toClient = Self.inject(WebSocketCloseFrame.toClient(code: code, reason: text), into: &upstream, relays: &relaysUpstream)
        }
        if !closedToUpstream {
            closedToUpstream = true
            out.toUpstream = Self.inject(WebSocketCloseFrame.toUpstream(code: 1001), into: &client, relays: &relaysClient)
        }
        return out
    }

    /// The upstream's connection ended: the client gets 1011 if its direction sits at a frame boundary, else only
    /// the TCP close (a close frame inside a payload would corrupt the stream).
    mutating func upstreamGone() -> [UInt8]? {
        if reason == nil { reason = bothClosed ? "closed" : "upstream_closed" }
        guard !closedToClient, upstream.isAtFrameBoundary else { return nil }
        closedToClient = true
        relaysUpstream = false
        return WebSocketCloseFrame.toClient(code: 1011, reason: "")
    }

    /// The client's connection ended: the upstream gets 1001 if its direction sits at a frame boundary.
    mutating func clientGone() -> [UInt8]? {
        if reason == nil { reason = bothClosed ? "closed" : "client_closed" }
        guard !closedToUpstream, client.isAtFrameBoundary else { return nil }
        closedToUpstream = true
        relaysClient = false
        return WebSocketCloseFrame.toUpstream(code: 1001)
    }

    /// A close into `stream`: at once when it sits at a boundary (the stream is still followed, nothing relayed),
    /// else at the end of the frame under way.
    private static func inject(_ frame: [UInt8], into stream: inout WebSocketStream, relays: inout Bool) -> [UInt8]? {
        // The peer's own close already went this way: a second close frame would break the protocol for the receiver.
        if stream.senderClosed { return nil }
        if stream.isAtFrameBoundary {
            relays = false
            return frame
        }
        return stream.end(with: frame)
    }
}
