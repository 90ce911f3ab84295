import GatewayJSON
import GatewayProxy
import GatewaySessions
import GatewayTokens
import NIOCore
import NIOHTTP1

/// The token endpoints under `token_service.path_prefix` (DESIGN §7) as a `LocalService` of the data path:
/// `POST login`, `token`, `revoke` and `logout`, and `GET revocations` when the feed is configured. Parses the
/// request, runs the `SessionService` off the event loop and answers in the RFC 6749 shape, `Cache-Control: no-store`.
package final class TokenEndpoints: LocalService {
    let prefix: String
    let service: SessionService
    let realm: String
    /// The revocation feed, when `token_service.revocations_feed_token` is set.
    let feed: RevocationFeed?
    /// Token-endpoint bodies are a few hundred bytes; anything larger is refused before it is parsed.
    package let maxBodyBytes = 16 * 1024

    init(prefix: String, service: SessionService, realm: String, feed: RevocationFeed? = nil) {
        self.feed = feed
        self.prefix = prefix
        self.service = service
        self.realm = realm
    }

    enum Endpoint: String {
        case login, token, revoke, logout, revocations
    }

    package func respond(to request: LocalRequest, on eventLoop: any EventLoop) -> EventLoopFuture<LocalResponse> {
        let name = request.path.dropFirst(prefix.count + 1)
        guard request.path != prefix, let endpoint = Endpoint(rawValue: String(name)), endpoint != .revocations || feed != nil else {
            return eventLoop.makeSucceededFuture(
                Self.error(
                    TokenServiceError(error: "not_found", reason: "route_not_found", description: "No such token endpoint", status: 404),
                    requestID: request.requestID))
        }
        if endpoint == .revocations, let feed {
            return feed.respond(to: request, on: eventLoop)
        }
        guard request.method == .POST else {
            return eventLoop.makeSucceededFuture(
                Self.methodNotAllowed(allow: "POST", "This endpoint takes POST", requestID: request.requestID))
        }
        let promise = eventLoop.makePromise(of: LocalResponse.self)
        promise.completeWithTask { await self.answer(endpoint, request) }
        return promise.futureResult
    }

    func answer(_ endpoint: Endpoint, _ request: LocalRequest) async -> LocalResponse {
        do throws(TokenServiceError) {
            switch endpoint {
            case .logout:
                return try await logout(request)
            case .revoke:
                let parameters = try OAuthParameters.parse(headers: request.headers, body: request.body)
                guard let token = parameters["token"], !token.isEmpty else { throw .invalidRequest("token is required") }
                try await service.revoke(token: token)
                // RFC 7009 §2.2: 200 whether or not the token was known.
                return LocalResponse(status: .ok, headers: Self.noStore(contentType: nil), body: [])
            case .revocations:
                throw .serverError  // answered by `feed` before this point
            case .login:
                let parameters = try OAuthParameters.parse(headers: request.headers, body: request.body)
                return try await passwordGrant(parameters, request, failureStatus: 401)
            case .token:
                let parameters = try OAuthParameters.parse(headers: request.headers, body: request.body)
                switch parameters["grant_type"] {
                case "password":
                    return try await passwordGrant(parameters, request, failureStatus: 400)
                case "refresh_token":
                    let grant = try await service.refreshGrant(
                        refreshToken: parameters["refresh_token"] ?? "", scope: parameters["scope"], clientID: parameters["client_id"])
                    return Self.success(grant)
                case nil, "":
                    throw .invalidRequest("grant_type is required")
                default:
                    throw .unsupportedGrantType
                }
            }
        } catch {
            var response = Self.error(error, requestID: request.requestID)
            // RFC 9110 §15.5.2: a 401 carries a challenge.
            if error.status == 401 { response.headers.add(name: "WWW-Authenticate", value: "Bearer realm=\"\(realm)\"") }
            return response
        }
    }

    private func passwordGrant(
        _ parameters: OAuthParameters, _ request: LocalRequest, failureStatus: Int
    ) async throws(TokenServiceError) -> LocalResponse {
        guard let username = parameters["username"] else { throw .invalidRequest("username is required") }
        guard let password = parameters["password"] else { throw .invalidRequest("password is required") }
        let grant = try await service.passwordGrant(
            username: username, password: password, scope: parameters["scope"], clientID: parameters["client_id"],
            clientAddress: request.clientAddress, failureStatus: failureStatus)
        return Self.success(grant)
    }

    /// `POST logout` with the session's access token as Bearer: revokes the session, 204.
    private func logout(_ request: LocalRequest) async throws(TokenServiceError) -> LocalResponse {
        let challenge: (GatewayError) -> LocalResponse = { error in
            var headers = Self.noStore(contentType: "application/json")
            if let value = error.wwwAuthenticate(realm: self.realm) { headers.add(name: "WWW-Authenticate", value: value) }
            return LocalResponse(
                status: error.status, headers: headers, body: error.body(requestID: request.requestID), reason: error.reason)
        }
        switch BearerCredential.extract(from: request.headers) {
        case .absent:
            return challenge(.tokenMissing)
        case .invalidRequest:
            return challenge(.invalidAuthorization)
        case .token(let token):
            switch try await service.logout(accessToken: String(token)) {
            case .failure(let rejection):
                return challenge(.invalidToken(rejection))
            case .success(let subject):
                return LocalResponse(status: .noContent, headers: Self.noStore(contentType: nil), body: [], subject: subject)
            }
        }
    }

    static func success(_ grant: SessionService.Grant) -> LocalResponse {
        LocalResponse(status: .ok, headers: noStore(contentType: "application/json"), body: grant.body, subject: grant.subject)
    }

    /// RFC 6749 §5.2 body, plus the stable `reason`.
    static func error(_ error: TokenServiceError, requestID: String) -> LocalResponse {
        var headers = noStore(contentType: "application/json")
        if let retryAfter = error.retryAfter { headers.add(name: "Retry-After", value: String(retryAfter)) }
        return LocalResponse(
            status: HTTPResponseStatus(statusCode: error.status), headers: headers, body: error.body(requestID: requestID),
            reason: error.reason)
    }

    /// 405 with `Allow` (RFC 9110 §15.5.6) in the token endpoints' error shape.
    static func methodNotAllowed(allow method: String, _ description: String, requestID: String) -> LocalResponse {
        var response = error(
            TokenServiceError(error: "invalid_request", reason: "method_not_allowed", description: description, status: 405),
            requestID: requestID)
        response.headers.add(name: "Allow", value: method)
        return response
    }

    static func noStore(contentType: String?) -> HTTPHeaders {
        var headers = HTTPHeaders()
        if let contentType { headers.add(name: "Content-Type", value: contentType) }
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Pragma", value: "no-cache")
        return headers
    }
}
