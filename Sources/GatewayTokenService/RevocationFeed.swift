import GatewayJSON
import GatewayProxy
import GatewaySessions
import GatewayTokens
import NIOCore
import NIOHTTP1

/// The revocation feed `GET <path_prefix>/revocations?after=SEQ[&wait=SECONDS]` (DESIGN §9; wire format in
/// the README, "Revocations across processes"): the store's revocation log for verify-only gateways that follow it (`revocations_uri`)
/// instead of holding a database connection each. Read with a shared secret (`Authorization: Bearer`), compared in
/// constant time. Answers come from `RevocationSync`'s memory, never from the store; a reader with nothing new is
/// held until an entry arrives or `wait` (default and at most 30 s) has passed.
struct RevocationFeed: Sendable {
    /// The shared secret's bytes (`token_service.revocations_feed_token`).
    let secret: [UInt8]
    let sync: RevocationSync
    let realm: String

    static let maxWaitSeconds: Int64 = 30

    init(secret: String, sync: RevocationSync, realm: String) {
        self.secret = Array(secret.utf8)
        self.sync = sync
        self.realm = realm
    }

    func respond(to request: LocalRequest, on loop: any EventLoop) -> EventLoopFuture<LocalResponse> {
        guard request.method == .GET else {
            return loop.makeSucceededFuture(
                TokenEndpoints.methodNotAllowed(allow: "GET", "The revocation feed takes GET", requestID: request.requestID))
        }
        switch BearerCredential.extract(from: request.headers) {
        case .token(let presented) where ConstantTime.equals(presented.utf8, secret):
            break
        case .token:
            return loop.makeSucceededFuture(unauthorized(request, wrong: true))
        case .absent, .invalidRequest:
            return loop.makeSucceededFuture(unauthorized(request, wrong: false))
        }
        let after: Int64
        let wait: Int64
        do throws(TokenServiceError) {
            (after, wait) = try Self.parseQuery(request.query)
        } catch {
            return loop.makeSucceededFuture(TokenEndpoints.error(error, requestID: request.requestID))
        }
        let requestID = request.requestID
        return sync.page(after: after, wait: .seconds(wait), on: loop).map { outcome in
            switch outcome {
            case .page(let page):
                return LocalResponse(
                    status: .ok, headers: TokenEndpoints.noStore(contentType: "application/json"), body: Self.body(page))
            case .unavailable:
                return TokenEndpoints.error(
                    TokenServiceError(
                        error: "temporarily_unavailable", reason: "store_unavailable",
                        description: "The revocation log cannot be read right now; try again shortly", status: 503, retryAfter: 1),
                    requestID: requestID)
            case .busy:
                return TokenEndpoints.error(
                    TokenServiceError(
                        error: "temporarily_unavailable", reason: "too_many_waiters",
                        description: "Too many readers are waiting on the revocation feed; try again shortly", status: 503,
                        retryAfter: 1),
                    requestID: requestID)
            }
        }
    }

    /// RFC 6750 §3: no error code when no credential was presented, `invalid_token` for a wrong one; the body names
    /// `invalid_token` either way (the feed's wire format).
    private func unauthorized(_ request: LocalRequest, wrong: Bool) -> LocalResponse {
        var response = TokenEndpoints.error(
            TokenServiceError(
                error: "invalid_token", description: "The revocation feed needs its shared secret as a Bearer token", status: 401),
            requestID: request.requestID)
        let challenge = wrong ? "Bearer realm=\"\(realm)\", error=\"invalid_token\"" : "Bearer realm=\"\(realm)\""
        response.headers.add(name: "WWW-Authenticate", value: challenge)
        return response
    }

    /// `after` (required: a sequence number, decimal digits) and `wait` (optional: whole seconds, capped at 30).
    /// Other parameters are ignored; a repeated one is malformed.
    static func parseQuery(_ query: String?) throws(TokenServiceError) -> (after: Int64, wait: Int64) {
        var after: Int64? = nil
        var wait: Int64? = nil
        for pair in (query ?? "").split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = parts[0]
            let value = parts.count == 2 ? parts[1] : ""
            switch name {
            case "after":
                guard after == nil, let n = decimal(value) else {
                    throw .invalidRequest("after must be a sequence number (decimal digits), given once")
                }
                after = n
            case "wait":
                guard wait == nil, let n = decimal(value) else {
                    throw .invalidRequest("wait must be whole seconds (decimal digits), given once")
                }
                wait = min(n, maxWaitSeconds)
            default:
                continue
            }
        }
        guard let after else { throw .invalidRequest("after is required") }
        return (after, wait ?? maxWaitSeconds)
    }

    /// Plain decimal digits (no sign, no spaces), at most 18 so it fits Int64.
    private static func decimal(_ text: Substring) -> Int64? {
        guard (1...18).contains(text.utf8.count), text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int64(text)
    }

    static func body(_ page: RevocationFeedPage) -> [UInt8] {
        let entries: [JSONValue] = page.revocations.map { record in
            .object(
                JSONObject([
                    ("seq", .number(Double(record.sequence))), ("sid", .string(record.sessionID)),
                    ("revoked_at", .number(record.revokedAt)), ("until", .number(record.until)),
                ]))
        }
        var object = JSONObject([("revocations", .array(entries)), ("next", .number(Double(page.next)))])
        if page.reset { object["reset"] = .bool(true) }
        return Array((JSONWriter.string(.object(object)) + "\n").utf8)
    }

}
