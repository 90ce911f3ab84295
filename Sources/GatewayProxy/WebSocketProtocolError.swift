/// A WebSocket peer broke RFC 6455 in a frame header the gateway relays. The tunnel ends with `closeCode` (1002,
/// protocol error) toward the peer that broke it, and the `code` goes to the log and the closed-tunnel metric.
package struct WebSocketProtocolError: Error, Equatable, Sendable {
    /// Stable, machine-readable reason, e.g. `websocket_unmasked_client_frame`.
    package var code: String
    /// The close status code for the peer that broke the protocol.
    package var closeCode: UInt16

    package init(code: String, closeCode: UInt16 = 1002) {
        self.code = code
        self.closeCode = closeCode
    }
}
