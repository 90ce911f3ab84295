import NIOCore
import NIOHTTP1

/// Something the gateway answers itself on the data-path listener instead of forwarding (the token endpoints under
/// `token_service.path_prefix`). The data path collects the request body, bounded by `maxBodyBytes`, then asks the
/// service; the service may work asynchronously (password hashing, the session store) and completes the future
/// whenever it is done. The connection's state machine treats the answer like an upstream response.
public protocol LocalService: Sendable {
    /// Larger bodies get a 413 before the service sees them.
    var maxBodyBytes: Int { get }

    /// Answers `request`. The future may complete on any event loop.
    func respond(to request: LocalRequest, on eventLoop: any EventLoop) -> EventLoopFuture<LocalResponse>
}

/// A request for a `LocalService`, its body complete.
public struct LocalRequest: Sendable {
    public var method: HTTPMethod
    /// The canonical path (DESIGN §5), without the query.
    public var path: String
    public var query: String?
    public var headers: HTTPHeaders
    public var body: [UInt8]
    public var clientAddress: String?
    public var requestID: String

    public init(
        method: HTTPMethod, path: String, query: String?, headers: HTTPHeaders, body: [UInt8], clientAddress: String?,
        requestID: String
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.clientAddress = clientAddress
        self.requestID = requestID
    }
}

/// A `LocalService`'s answer.
public struct LocalResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// The stable reason for the access log (`invalid_grant`, `too_many_requests`, ...), nil on success.
    public var reason: String?
    /// The authenticated subject, for the access log.
    public var subject: String?

    public init(status: HTTPResponseStatus, headers: HTTPHeaders, body: [UInt8], reason: String? = nil, subject: String? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.reason = reason
        self.subject = subject
    }
}
