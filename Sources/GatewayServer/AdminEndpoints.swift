import GatewayJSON
import GatewaySessions
import NIOCore
import NIOHTTP1

/// The admin listener's endpoints (DESIGN §7): liveness, Prometheus metrics, readiness for probes (503 with the conditions not met yet,
/// such as a remote key set that has not loaded), and RFC 7662 introspection of the token service's tokens. The
/// admin listener is meant for the pod or host only (`127.0.0.1:9901` by default); introspection takes no client
/// authentication because of that.
enum AdminEndpoints {
    static let json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]

    static func answer(
        _ head: HTTPRequestHead, _ body: [UInt8], readiness: Readiness, sessions: SessionService?,
        metrics: @escaping @Sendable () -> EventLoopFuture<String>, on loop: any EventLoop
    ) -> EventLoopFuture<SimpleResponder.Response> {
        switch (head.method, head.uri.split(separator: "?", maxSplits: 1).first ?? "") {
        case (.GET, "/healthz"), (.HEAD, "/healthz"):
            return loop.makeSucceededFuture(.init(status: .ok, headers: json, body: Array(#"{"status":"ok"}"#.utf8)))
        case (.GET, "/readyz"), (.HEAD, "/readyz"):
            let (ready, answer) = readiness.body()
            return loop.makeSucceededFuture(.init(status: ready ? .ok : .serviceUnavailable, headers: json, body: answer))
        case (.GET, "/metrics"):
            return metrics().map { text in
                SimpleResponder.Response(
                    status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Cache-Control", "no-store")],
                    body: Array(text.utf8))
            }
        case (.POST, "/introspect") where sessions != nil:
            return introspect(head, body, sessions: sessions!, on: loop)
        case (_, "/introspect") where sessions != nil:
            return loop.makeSucceededFuture(error(TokenServiceError(
                error: "invalid_request", reason: "method_not_allowed", description: "Introspection takes POST", status: 405)))
        default:
            return loop.makeSucceededFuture(.init(status: .notFound, headers: json, body: Array(#"{"error":"not_found","reason":"route_not_found"}"#.utf8)))
        }
    }

    /// RFC 7662 §2: form parameter `token` (and an optional `token_type_hint`, which is not needed to find it).
    static func introspect(
        _ head: HTTPRequestHead, _ body: [UInt8], sessions: SessionService, on loop: any EventLoop
    ) -> EventLoopFuture<SimpleResponder.Response> {
        let token: String
        do throws(TokenServiceError) {
            let parameters = try OAuthParameters.parse(headers: head.headers, body: body)
            guard let value = parameters["token"], !value.isEmpty else { throw TokenServiceError.invalidRequest("token is required") }
            token = value
        } catch {
            return loop.makeSucceededFuture(self.error(error))
        }
        let promise = loop.makePromise(of: SimpleResponder.Response.self)
        promise.completeWithTask {
            let result = await sessions.introspect(token: token)
            return SimpleResponder.Response(status: .ok, headers: json, body: Array((JSONWriter.string(.object(result)) + "\n").utf8))
        }
        return promise.futureResult
    }

    static func error(_ error: TokenServiceError) -> SimpleResponder.Response {
        SimpleResponder.Response(status: HTTPResponseStatus(statusCode: error.status), headers: json, body: error.body(requestID: nil))
    }
}
