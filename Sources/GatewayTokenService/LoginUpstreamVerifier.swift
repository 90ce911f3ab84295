import CurlNIO
import GatewayJSON
import GatewayProxy
import GatewaySessions
import Logging
import NIOCore

/// `token_service.login_upstream` (DESIGN §4): the credential check is delegated to an upstream of the
/// configuration. The gateway POSTs `{"username", "password"}` as JSON through libcurl; a 2xx answer
/// `{"subject", "scopes"?, "claims"?}` is a success, 401/403/404 a wrong username or password, and anything else
/// (another status, a malformed answer, no answer in time) a failed check: 503, so an outage never reads as "wrong
/// password" and is never counted against the user's login limit.
package final class LoginUpstreamVerifier: CredentialVerifier {
    let target: UpstreamTarget
    let path: String
    /// The exchange runs on this loop's libcurl driver.
    let loop: any EventLoop
    let drivers: CurlDriverGroup
    let logger: Logger
    static let maxAnswerBytes = 64 * 1024

    package init(target: UpstreamTarget, path: String, loop: any EventLoop, drivers: CurlDriverGroup, logger: Logger) {
        self.target = target
        self.path = path
        self.loop = loop
        self.drivers = drivers
        self.logger = logger
    }

    package func authenticate(username: String, password: String) async throws(TokenServiceError) -> AuthenticatedUser? {
        let body = Array(JSONWriter.string(.object(JSONObject([("username", .string(username)), ("password", .string(password))]))).utf8)
        let request = CurlRequest(
            origin: target.origin, requestTarget: target.basePath + path, method: "POST",
            headers: [CurlHeader(name: "Content-Type", value: "application/json"), CurlHeader(name: "Accept", value: "application/json")],
            body: .none, unixSocketPath: target.unixSocket, tls: target.tls, connectTimeout: target.connectTimeout,
            responseTimeout: target.responseTimeout, idleTimeout: target.idleTimeout)
        let (loop, drivers, timeout) = (self.loop, self.drivers, target.responseTimeout)
        let response: CurlFetchResponse
        do {
            response = try await loop.flatSubmit {
                drivers.driver(for: loop).fetch(request, requestBody: body, maxResponseBytes: Self.maxAnswerBytes, timeout: timeout)
            }.get()
        } catch {
            logger.warning("login upstream: no usable answer: \(error)")
            throw .loginUpstreamFailed
        }
        switch response.status {
        case 200..<300:
            guard let user = Self.parse(response.body) else {
                logger.warning("login upstream: a \(response.status) answer that is not {\"subject\", \"scopes\"?, \"claims\"?}")
                throw .loginUpstreamFailed
            }
            return user
        case 401, 403, 404:
            return nil
        default:
            logger.warning("login upstream: answered \(response.status)")
            throw .loginUpstreamFailed
        }
    }

    /// `{"subject": non-empty string, "scopes"?: [scope-token], "claims"?: {...}}`.
    static func parse(_ body: [UInt8]) -> AuthenticatedUser? {
        guard let object = try? JSONParser.parse(body, limits: .document).objectValue,
            let subject = object["subject"]?.stringValue, !subject.isEmpty
        else { return nil }
        var scopes: [String] = []
        if let value = object["scopes"] {
            guard let array = value.arrayValue else { return nil }
            for element in array {
                guard let scope = element.stringValue, !scope.isEmpty,
                    !scope.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F || $0 == 0x22 || $0 == 0x5C })
                else { return nil }
                scopes.append(scope)
            }
        }
        var claims = JSONObject()
        if let value = object["claims"] {
            guard let object = value.objectValue else { return nil }
            claims = object
        }
        return AuthenticatedUser(subject: subject, scopes: scopes, claims: claims)
    }
}
