import GatewayJSON
import NIOHTTP1

/// The admin listener's endpoints (DESIGN §7): liveness and readiness for probes.
enum AdminEndpoints {
    static func answer(_ head: HTTPRequestHead, _ body: [UInt8], ready: Bool) -> SimpleResponder.Response {
        let json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        switch (head.method, head.uri.split(separator: "?", maxSplits: 1).first ?? "") {
        case (.GET, "/healthz"), (.HEAD, "/healthz"):
            return .init(status: .ok, headers: json, body: Array(#"{"status":"ok"}"#.utf8))
        case (.GET, "/readyz"), (.HEAD, "/readyz"):
            return ready
                ? .init(status: .ok, headers: json, body: Array(#"{"status":"ready"}"#.utf8))
                : .init(status: .serviceUnavailable, headers: json, body: Array(#"{"status":"not_ready"}"#.utf8))
        default:
            return .init(status: .notFound, headers: json, body: Array(#"{"error":"not_found","reason":"route_not_found"}"#.utf8))
        }
    }
}
