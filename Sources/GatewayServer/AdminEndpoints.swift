import GatewayJSON
import NIOHTTP1

/// The admin listener's endpoints (DESIGN §7): liveness, and readiness for probes (503 with the conditions not met
/// yet, such as a remote key set that has not loaded).
enum AdminEndpoints {
    static func answer(_ head: HTTPRequestHead, _ body: [UInt8], readiness: Readiness) -> SimpleResponder.Response {
        let json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        switch (head.method, head.uri.split(separator: "?", maxSplits: 1).first ?? "") {
        case (.GET, "/healthz"), (.HEAD, "/healthz"):
            return .init(status: .ok, headers: json, body: Array(#"{"status":"ok"}"#.utf8))
        case (.GET, "/readyz"), (.HEAD, "/readyz"):
            let (ready, answer) = readiness.body()
            return .init(status: ready ? .ok : .serviceUnavailable, headers: json, body: answer)
        default:
            return .init(status: .notFound, headers: json, body: Array(#"{"error":"not_found","reason":"route_not_found"}"#.utf8))
        }
    }
}
