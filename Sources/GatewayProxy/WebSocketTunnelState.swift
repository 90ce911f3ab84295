/// What a WebSocket tunnel has relayed and why the gateway ends it, as a value with no I/O
/// (`WebSocketTunnelHandler` performs).
struct WebSocketTunnelState: Sendable {
    /// Why the gateway itself ends a tunnel; the raw value is the `reason` of its log line and metric.
    enum Cause: String, Sendable {
        case tokenExpired = "token_expired"
        case tokenRevoked = "token_revoked"
        case idle = "idle_timeout"
        case shutdown = "shutdown"
    }

    private(set) var fromClient: Int64 = 0
    private(set) var fromUpstream: Int64 = 0

    mutating func clientBytes(_ count: Int) {
        fromClient += Int64(count)
    }

    mutating func upstreamBytes(_ count: Int) {
        fromUpstream += Int64(count)
    }
}
