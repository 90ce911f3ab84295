import GatewayConfig
import GatewayControl
import GatewayJSON
import GatewaySessions
import GatewayTokenService
import GatewayTokens
import NIOCore
import NIOHTTP1

/// The admin listener's endpoints (DESIGN §7): liveness, Prometheus metrics, readiness for probes (503 with the conditions not met yet,
/// such as a remote key set that has not loaded), and RFC 7662 introspection of the token service's tokens.
///
/// Introspection tells whoever asks whether a token is live and whose it is, so it must not be open to the network:
/// with `token_service.introspection_token` it requires that bearer secret; without one it is served only when the
/// admin listener is on a loopback address, and is absent (404) otherwise — a container binds the admin listener
/// to `0.0.0.0` for its probes, and the probes must not open introspection to every pod that can reach the port.
enum AdminEndpoints {
    static let json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]

    /// Who may call `POST /introspect`.
    enum IntrospectionAccess: Sendable {
        /// Anyone who can connect: the admin listener is on loopback and no secret is configured.
        case open
        /// Callers presenting `Authorization: Bearer <secret>`.
        case bearer([UInt8])
        /// Not served (404): no secret, and the admin listener is reachable from other hosts.
        case off

        var isServed: Bool {
            if case .off = self { return false }
            return true
        }

        init(token: String?, adminListen: ListenAddress) {
            if let token {
                self = .bearer(Array(token.utf8))
            } else {
                self = adminListen.isLoopback ? .open : .off
            }
        }
    }

    static func answer(
        _ head: HTTPRequestHead, _ body: [UInt8], readiness: Readiness, sessions: SessionService?,
        introspection: IntrospectionAccess = .open,
        metrics: @escaping @Sendable () -> EventLoopFuture<String>, on loop: any EventLoop
    ) -> EventLoopFuture<SimpleResponder.Response> {
        // Without the token service, or switched off, introspection answers like any unknown path.
        let introspected = introspection.isServed ? sessions : nil
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
        case (.POST, "/introspect") where introspected != nil:
            if case .bearer(let secret) = introspection, !authorized(head, secret: secret) {
                var error = self.error(
                    TokenServiceError(
                        error: "invalid_token", reason: "introspection_unauthorized",
                        description: "Introspection requires the configured bearer secret", status: 401))
                error.headers.append(("WWW-Authenticate", #"Bearer realm="portcullis-admin", error="invalid_token""#))
                return loop.makeSucceededFuture(error)
            }
            return introspect(head, body, sessions: introspected!, on: loop)
        case (_, "/introspect") where introspected != nil:
            return loop.makeSucceededFuture(
                error(
                    TokenServiceError(
                        error: "invalid_request", reason: "method_not_allowed", description: "Introspection takes POST", status: 405)))
        default:
            return loop.makeSucceededFuture(
                .init(status: .notFound, headers: json, body: Array(#"{"error":"not_found","reason":"route_not_found"}"#.utf8)))
        }
    }

    /// Whether the request carries exactly one `Authorization: Bearer <secret>` (compared in constant time, so the
    /// answer time says nothing about how much of a guess was right).
    static func authorized(_ head: HTTPRequestHead, secret: [UInt8]) -> Bool {
        let values = head.headers["Authorization"]
        guard values.count == 1 else { return false }
        let value = Array(values[0].utf8)
        let scheme = Array("bearer ".utf8)
        guard value.count > scheme.count,
            zip(value.prefix(scheme.count), scheme).allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 })
        else { return false }
        return ConstantTime.equals(value.dropFirst(scheme.count), secret)
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
