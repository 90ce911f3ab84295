import Testing

@testable import GatewayConfig

/// The WebSocket settings (DESIGN §10): a route's `websocket` switch and the two tunnel clocks in `limits`.
@Suite struct WebSocketConfigTests {
    static func parse(_ json: String) throws(ConfigErrors) -> GatewayConfiguration {
        try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/etc/portcullis", environment: [:])
    }

    static func errors(_ json: String) -> [String] {
        do {
            _ = try parse(json)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    static func config(limits: String = "{}", route: String = "") -> String {
        """
        {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}}, "limits": \(limits),
         "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"\(route)}]}
        """
    }

    @Test func defaults() throws {
        let c = try Self.parse(Self.config())
        #expect(c.routes[0].websocket)
        #expect(c.limits.websocketIdleTimeoutMs == 300_000)
        #expect(c.limits.websocketCloseTimeoutMs == 1000)
    }

    @Test func valuesAreRead() throws {
        let c = try Self.parse(
            Self.config(
                limits: #"{"websocket_idle_timeout_ms": 5000, "websocket_close_timeout_ms": 250}"#, route: #", "websocket": false"#))
        #expect(!c.routes[0].websocket)
        #expect(c.limits.websocketIdleTimeoutMs == 5000)
        #expect(c.limits.websocketCloseTimeoutMs == 250)
    }

    @Test func wrongValuesNameTheirPath() {
        let e = Self.errors(
            Self.config(
                limits: #"{"websocket_idle_timeout_ms": 0, "websocket_close_timeout_ms": "soon"}"#, route: #", "websocket": "yes""#))
        #expect(e.contains("limits.websocket_idle_timeout_ms: must be between 1 and 86400000, found 0"))
        #expect(e.contains("limits.websocket_close_timeout_ms: expected an integer, found a string"))
        #expect(e.contains("routes[0].websocket: expected true or false, found a string"))
    }
}
