import CurlNIO
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// How a tunnel ends: close frames into each direction at a boundary, protocol errors closing both ways, the peers'
/// answers seen; and the opening handshake's checks.
@Suite struct WebSocketTunnelStateTests {
    typealias Frames = WebSocketStreamTests

    static func feed(_ state: inout WebSocketTunnelState, client bytes: [UInt8]) -> WebSocketTunnelState.Relay {
        bytes.withUnsafeBytes { state.receiveFromClient($0) }
    }

    static func feed(_ state: inout WebSocketTunnelState, upstream bytes: [UInt8]) -> WebSocketTunnelState.Relay {
        bytes.withUnsafeBytes { state.receiveFromUpstream($0) }
    }

    @Test func framesAreRelayedAndCounted() {
        var state = WebSocketTunnelState()
        let text = Frames.client(1, 10)
        #expect(Self.feed(&state, client: text) == .init(forward: text.count))
        let reply = Frames.upstream(1, 300)
        #expect(Self.feed(&state, upstream: reply) == .init(forward: reply.count))
        #expect(state.fromClient == Int64(text.count))
        #expect(state.fromUpstream == Int64(reply.count))
        #expect(!state.isClosing)
    }

    @Test func incompleteHeaderIsKept() {
        var state = WebSocketTunnelState()
        let frame = Frames.client(2, 1000)
        let relay = Self.feed(&state, client: Array(frame.prefix(3)))
        #expect(relay == .init(forward: 0, keep: 3))
    }

    @Test func expiryAtBoundariesClosesBothWaysAtOnceAndWaitsForTheClientsAnswer() {
        var state = WebSocketTunnelState()
        let (toClient, toUpstream) = state.end(.tokenExpired)
        #expect(toClient == WebSocketCloseFrame.toClient(code: 1008, reason: "token_expired"))
        #expect(toUpstream?.count == 8)  // masked 1001: 2 + 4 + 2
        #expect(state.reason == "token_expired")
        #expect(!state.clientDone)
        // Later data from the client is followed but not relayed; its close answer completes the close.
        #expect(Self.feed(&state, client: Frames.client(1, 5)).forward == 0)
        #expect(Self.feed(&state, client: Frames.client(8, 2)).forward == 0)
        #expect(state.clientDone)
        // A second cause changes nothing.
        #expect(state.end(.tokenRevoked) == (nil, nil))
        #expect(state.reason == "token_expired")
    }

    /// The upstream's close already reached the client: the gateway's own close to the client would be a second one.
    @Test func noSecondCloseAfterThePeersClose() {
        var state = WebSocketTunnelState()
        #expect(Self.feed(&state, upstream: Frames.upstream(8, 2)).forward == 4)
        let (toClient, toUpstream) = state.end(.tokenExpired)
        #expect(toClient == nil)
        #expect(toUpstream != nil)
        #expect(Self.feed(&state, client: Frames.client(8, 2)).forward == 0)
        #expect(state.clientDone)
    }

    @Test func revocationInsideAFrameWaitsForItsEnd() {
        var state = WebSocketTunnelState()
        let big = Frames.upstream(2, 1000)
        #expect(Self.feed(&state, upstream: Array(big.prefix(500))).forward == 500)
        let (toClient, _) = state.end(.tokenRevoked)
        #expect(toClient == nil)
        let relay = Self.feed(&state, upstream: Array(big.suffix(from: 500)) + Frames.upstream(1, 3))
        #expect(relay.forward == big.count - 500)
        #expect(relay.thenToOther == WebSocketCloseFrame.toClient(code: 1008, reason: "token_revoked"))
    }

    @Test func unmaskedClientFrameFailsBothWays() {
        var state = WebSocketTunnelState()
        let good = Frames.client(1, 4)
        let bad = Frames.upstream(1, 4)  // unmasked, from the client
        let relay = Self.feed(&state, client: good + bad)
        #expect(relay.forward == good.count)
        #expect(relay.failed?.closeCode == 1002)
        #expect(relay.thenToOther?.count == 8)
        #expect(relay.toSender?.prefix(4) == [0x88, UInt8(2 + relay.failed!.code.utf8.count), 0x03, 0xEA])
        #expect(state.reason == relay.failed?.code)
    }

    @Test func upstreamGoneGivesTheClient1011OnlyAtABoundary() {
        var state = WebSocketTunnelState()
        #expect(state.upstreamGone() == WebSocketCloseFrame.toClient(code: 1011, reason: ""))
        var mid = WebSocketTunnelState()
        _ = Self.feed(&mid, upstream: Array(Frames.upstream(2, 100).prefix(50)))
        #expect(mid.upstreamGone() == nil)
        #expect(mid.reason == "upstream_closed")
    }

    @Test func acceptValueMatchesRFC6455Example() {
        #expect(WebSocketHandshake.accept(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func classifiesUpgradeRequests() {
        var headers: HTTPHeaders = [
            "Host": "x", "Connection": "keep-alive, Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        ]
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws", headers: headers)
        #expect(WebSocketHandshake.classify(head, hasBody: false) == .upgrade(key: "dGhlIHNhbXBsZSBub25jZQ=="))
        #expect(WebSocketHandshake.classify(head, hasBody: true) == .invalid)
        headers.replaceOrAdd(name: "Sec-WebSocket-Key", value: "short")
        #expect(
            WebSocketHandshake.classify(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers), hasBody: false)
                == .invalid)
        let plain = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["Upgrade": "h2c", "Connection": "Upgrade"])
        #expect(WebSocketHandshake.classify(plain, hasBody: false) == .none)
    }

    @Test func switchNeedsTheRightAccept() {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        var head = CurlResponseHead(
            status: 101,
            headers: [
                .init(name: "Upgrade", value: "websocket"), .init(name: "Connection", value: "Upgrade"),
                .init(name: "Sec-WebSocket-Accept", value: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ])
        #expect(WebSocketHandshake.isValidSwitch(head, key: key))
        head.headers[2].value = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
        #expect(!WebSocketHandshake.isValidSwitch(head, key: key))
        head.headers.remove(at: 2)
        #expect(!WebSocketHandshake.isValidSwitch(head, key: key))
    }

    @Test func upstreamRequestCarriesUpgradeFieldsAndHost() throws {
        let request = CurlRequest(
            origin: "https://app.internal:8443", requestTarget: "/ws?x=1", method: "GET",
            headers: [.init(name: "Sec-WebSocket-Key", value: "k"), .init(name: "X-Auth-Subject", value: "alice")])
        let text = String(decoding: try #require(WebSocketHandshake.upstreamRequest(request)), as: UTF8.self)
        #expect(
            text
                == "GET /ws?x=1 HTTP/1.1\r\nHost: app.internal:8443\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nX-Auth-Subject: alice\r\n\r\n"
        )
        var bad = request
        bad.headers.append(.init(name: "X-Evil", value: "a\r\nb"))
        #expect(WebSocketHandshake.upstreamRequest(bad) == nil)
    }
}
