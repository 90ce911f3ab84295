import GatewayJSON
import GatewayTokens
import NIOHTTP1

/// An answer the gateway gives itself, never forwarded (DESIGN §6): a status, a stable `reason`, the RFC 6750
/// `error` code where one applies, and the `WWW-Authenticate` challenge for 401/403/400-on-Authorization.
public struct GatewayError: Error, Sendable, Hashable {
    public var status: HTTPResponseStatus
    /// Stable machine-readable code.
    public var reason: String
    /// RFC 6750 error code, or a generic one for non-auth errors.
    public var error: String
    /// A fixed human sentence; never contains token bytes, claim values or secrets.
    public var message: String
    /// Whether to send a `WWW-Authenticate` challenge, and with which parameters.
    public var challenge: Challenge?
    /// Close the client connection after answering (framing errors, slow headers).
    public var closeConnection: Bool

    public enum Challenge: Sendable, Hashable {
        /// `Bearer realm="…"`, no error code (RFC 6750 §3.1: the request had no credential).
        case bare
        /// `Bearer realm="…", error="…", error_description="…"`.
        case error(String, description: String)
        /// `Bearer realm="…", error="insufficient_scope", scope="…"`.
        case insufficientScope([String])
    }

    public init(
        status: HTTPResponseStatus, reason: String, error: String, message: String, challenge: Challenge? = nil,
        closeConnection: Bool = false
    ) {
        self.status = status
        self.reason = reason
        self.error = error
        self.message = message
        self.challenge = challenge
        self.closeConnection = closeConnection
    }

    public static let tokenMissing = GatewayError(
        status: .unauthorized, reason: "token_missing", error: "unauthorized",
        message: "A bearer access token is required", challenge: .bare)

    public static let invalidAuthorization = GatewayError(
        status: .badRequest, reason: "invalid_request", error: "invalid_request",
        message: "The Authorization header must carry exactly one Bearer token",
        challenge: .error("invalid_request", description: "The Authorization header must carry exactly one Bearer token"))

    public static func invalidToken(_ rejection: TokenRejection) -> GatewayError {
        GatewayError(
            status: .unauthorized, reason: rejection.reason.rawValue, error: "invalid_token",
            message: rejection.errorDescription, challenge: .error("invalid_token", description: rejection.errorDescription))
    }

    public static func insufficientScope(_ scopes: [String]) -> GatewayError {
        GatewayError(
            status: .forbidden, reason: "insufficient_scope", error: "insufficient_scope",
            message: "The access token lacks a scope this route requires", challenge: .insufficientScope(scopes))
    }

    public static let routeNotFound = GatewayError(
        status: .notFound, reason: "route_not_found", error: "not_found", message: "No route matches this request")

    public static let invalidPath = GatewayError(
        status: .badRequest, reason: "invalid_path", error: "invalid_request",
        message: "The request path is not allowed (encoded separators, dot-segments with parameters, control or non-ASCII bytes)")

    public static let requestMalformed = GatewayError(
        status: .badRequest, reason: "request_malformed", error: "invalid_request",
        message: "The request is malformed", closeConnection: true)

    public static let methodNotAllowed = GatewayError(
        status: .methodNotAllowed, reason: "method_not_allowed", error: "invalid_request",
        message: "This method is not proxied", closeConnection: false)

    public static let headerTooLarge = GatewayError(
        status: .requestHeaderFieldsTooLarge, reason: "header_too_large", error: "invalid_request",
        message: "The request header is too large", closeConnection: true)

    public static let bodyTooLarge = GatewayError(
        status: .payloadTooLarge, reason: "body_too_large", error: "invalid_request",
        message: "The request body is too large", closeConnection: true)

    public static let requestTimeout = GatewayError(
        status: .requestTimeout, reason: "request_timeout", error: "invalid_request",
        message: "The request header was not received in time", closeConnection: true)

    public static let websocketNotAllowed = GatewayError(
        status: .badRequest, reason: "websocket_not_allowed", error: "invalid_request",
        message: "This route does not accept WebSocket upgrades", closeConnection: true)

    /// An Upgrade to `websocket` that is not a valid opening handshake (RFC 6455 §4.2.1).
    public static let websocketHandshakeInvalid = GatewayError(
        status: .badRequest, reason: "websocket_handshake_invalid", error: "invalid_request",
        message: "The WebSocket opening handshake is invalid", closeConnection: true)

    public static let upstreamUnavailable = GatewayError(
        status: .badGateway, reason: "upstream_unavailable", error: "bad_gateway", message: "The upstream could not be reached")

    public static let upstreamTimeout = GatewayError(
        status: .gatewayTimeout, reason: "upstream_timeout", error: "gateway_timeout", message: "The upstream did not answer in time")

    public static let upstreamInvalidResponse = GatewayError(
        status: .badGateway, reason: "upstream_invalid_response", error: "bad_gateway", message: "The upstream sent an invalid response")

    /// A gRPC call's `grpc-timeout` passed before the upstream's answer ended (answered as gRPC status 4).
    public static let deadlineExceeded = GatewayError(
        status: .gatewayTimeout, reason: "deadline_exceeded", error: "gateway_timeout",
        message: "The call's deadline (grpc-timeout) passed")

    /// A gRPC call routed to an upstream configured for HTTP/1.1 (answered as gRPC status 14): gRPC needs HTTP/2's
    /// trailers and full duplex, so the call is refused rather than sent where it cannot work.
    public static let upstreamNotHTTP2 = GatewayError(
        status: .badGateway, reason: "upstream_not_http2", error: "bad_gateway",
        message: "gRPC needs an upstream with http_version \"2\" or \"h2c\"")

    /// The `WWW-Authenticate` value for `realm`, if this error carries a challenge.
    public func wwwAuthenticate(realm: String) -> String? {
        guard let challenge else { return nil }
        switch challenge {
        case .bare:
            return "Bearer realm=\"\(realm)\""
        case .error(let code, let description):
            return "Bearer realm=\"\(realm)\", error=\"\(code)\", error_description=\"\(description)\""
        case .insufficientScope(let scopes):
            return "Bearer realm=\"\(realm)\", error=\"insufficient_scope\", scope=\"\(scopes.joined(separator: " "))\""
        }
    }

    /// The JSON body: `{"error","reason","message","request_id"}`.
    public func body(requestID: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160)
        out.append(contentsOf: #"{"error":"#.utf8)
        JSONWriter.appendString(error, to: &out)
        out.append(contentsOf: #","reason":"#.utf8)
        JSONWriter.appendString(reason, to: &out)
        out.append(contentsOf: #","message":"#.utf8)
        JSONWriter.appendString(message, to: &out)
        out.append(contentsOf: #","request_id":"#.utf8)
        JSONWriter.appendString(requestID, to: &out)
        out.append(contentsOf: "}\n".utf8)
        return out
    }
}
