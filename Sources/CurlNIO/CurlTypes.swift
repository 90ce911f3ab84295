import NIOCore

/// One request or response header, in wire order.
public struct CurlHeader: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// How the request body is framed towards the upstream. curl frames it; the caller never passes
/// `Content-Length` / `Transfer-Encoding` itself.
public enum CurlRequestBody: Sendable, Hashable {
    case none
    case length(Int64)
    case chunked
}

/// Everything the driver needs to start one upstream transfer.
public struct CurlRequest: Sendable {
    /// Scheme, host and port only, e.g. "http://127.0.0.1:3000" (used for CURLOPT_URL; the host part also gives
    /// curl the Host header unless `headers` carries one).
    public var origin: String
    /// The origin-form request target ("/a/b?x=1"), sent byte-for-byte: CURLOPT_REQUEST_TARGET + CURLOPT_PATH_AS_IS.
    public var requestTarget: String
    public var method: String
    /// Headers to send, in order. The caller has already removed framing headers. The driver makes sure curl adds
    /// no `Expect`, no `Accept` and no proxy headers of its own. An empty value is sent as an empty header.
    public var headers: [CurlHeader]
    public var body: CurlRequestBody
    /// When set, connect to this unix socket instead of TCP (CURLOPT_UNIX_SOCKET_PATH).
    public var unixSocketPath: String?
    /// TLS settings for `https` origins. Peer and host verification are always on.
    public var tls: CurlTLSOptions
    public var connectTimeout: TimeAmount
    /// No response head within this long after the request was sent (after the transfer started for bodyless
    /// requests, after the last body byte was handed to curl otherwise) → `.responseTimeout`.
    public var responseTimeout: TimeAmount
    /// Silence (no bytes either way, while NOT paused by us) longer than this mid-transfer → `.idleTimeout`.
    /// A long download that keeps streaming is never cut.
    public var idleTimeout: TimeAmount
    /// Which HTTP version to speak to the upstream.
    public var httpVersion: CurlHTTPVersion
    /// A bound on the whole transfer, counted from its start, paused or not (a gRPC call's `grpc-timeout`): past it
    /// the transfer fails with `.deadlineExceeded`. nil: only the response and idle timeouts apply.
    public var deadline: TimeAmount?

    public init(
        origin: String,
        requestTarget: String,
        method: String,
        headers: [CurlHeader] = [],
        body: CurlRequestBody = .none,
        unixSocketPath: String? = nil,
        tls: CurlTLSOptions = CurlTLSOptions(),
        connectTimeout: TimeAmount = .seconds(5),
        responseTimeout: TimeAmount = .seconds(60),
        idleTimeout: TimeAmount = .seconds(60),
        httpVersion: CurlHTTPVersion = .http1_1,
        deadline: TimeAmount? = nil
    ) {
        self.origin = origin
        self.requestTarget = requestTarget
        self.method = method
        self.headers = headers
        self.body = body
        self.unixSocketPath = unixSocketPath
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.responseTimeout = responseTimeout
        self.idleTimeout = idleTimeout
        self.httpVersion = httpVersion
        self.deadline = deadline
    }
}

/// The HTTP version a transfer asks libcurl for (CURLOPT_HTTP_VERSION).
public enum CurlHTTPVersion: Sendable, Hashable {
    /// HTTP/1.1 only.
    case http1_1
    /// HTTP/2 when TLS's ALPN agrees, else HTTP/1.1 (`CURL_HTTP_VERSION_2TLS`); cleartext origins stay on HTTP/1.1.
    case http2
    /// HTTP/2 with prior knowledge over cleartext (h2c, `CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE`).
    case http2PriorKnowledge
}

/// TLS settings for an `https` upstream.
public struct CurlTLSOptions: Sendable, Hashable {
    /// PEM bundle of CAs to trust instead of the system store (CURLOPT_CAINFO).
    public var caFile: String?
    /// Client certificate and key (PEM) for mutual TLS (CURLOPT_SSLCERT, CURLOPT_SSLKEY).
    public var clientCertificateFile: String?
    public var clientKeyFile: String?

    public init(caFile: String? = nil, clientCertificateFile: String? = nil, clientKeyFile: String? = nil) {
        self.caFile = caFile
        self.clientCertificateFile = clientCertificateFile
        self.clientKeyFile = clientKeyFile
    }
}

/// The final (non-1xx) response head. Informational heads (100-continue, 103) are swallowed.
public struct CurlResponseHead: Sendable, Hashable {
    public var status: Int
    public var headers: [CurlHeader]

    public init(status: Int, headers: [CurlHeader]) {
        self.status = status
        self.headers = headers
    }
}

/// What the delegate did with a chunk of response body.
public enum CurlBodyDisposition: Sendable, Hashable {
    /// All bytes were taken.
    case consumed
    /// None of the bytes were taken; curl redelivers them after `CurlTransfer.resumeReceiving()`.
    case pause
}

/// The delegate's answer when curl asks for request-body bytes.
public enum CurlUploadChunk: Sendable, Hashable {
    /// This many bytes were copied into the buffer (must be > 0 and ≤ buffer.count).
    case bytes(Int)
    /// Nothing available right now; call `CurlTransfer.resumeSending()` when there is.
    case pause
    /// The body is complete.
    case end
}

/// Why a transfer failed.
public struct CurlTransferError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }

        /// Could not resolve / connect / connect timed out.
        public static let couldNotConnect = Code("could_not_connect")
        /// No response head in time.
        public static let responseTimeout = Code("response_timeout")
        /// No bytes either way for longer than the idle timeout.
        public static let idleTimeout = Code("idle_timeout")
        /// The upstream closed or reset the connection (before or after the head).
        public static let connectionReset = Code("connection_reset")
        /// `CurlTransfer.cancel()` or driver shutdown.
        public static let cancelled = Code("cancelled")
        /// Unparseable response or request the driver refused to send (e.g. CR/LF in a header).
        public static let protocolError = Code("protocol_error")
        /// libcurl refused an option of the transfer (`curl_easy_setopt` failed), so it was never started.
        public static let optionRefused = Code("option_refused")
        /// The transfer's `CurlRequest.deadline` passed.
        public static let deadlineExceeded = Code("deadline_exceeded")
        /// Anything else.
        public static let other = Code("other")

        public var description: String { self.raw }
    }

    public var code: Code
    /// The CURLcode behind the failure (0 when the driver itself decided, e.g. timeouts and cancellation).
    public var curlCode: Int32
    /// Safe to log: never contains URLs or header values.
    public var message: String
    /// Whether `didReceiveHead` was called before the failure.
    public var receivedHead: Bool

    public init(code: Code, curlCode: Int32, message: String, receivedHead: Bool) {
        self.code = code
        self.curlCode = curlCode
        self.message = message
        self.receivedHead = receivedHead
    }

    public var description: String {
        "CurlTransferError(\(self.code), curl=\(self.curlCode), head=\(self.receivedHead)): \(self.message)"
    }
}

/// Receives the events of one transfer. All calls happen on the driver's event loop, possibly from inside a curl
/// callback (so the delegate must not block; calling back into `CurlTransfer` from any of these is allowed).
public protocol CurlTransferDelegate: AnyObject {
    func curlTransfer(_ transfer: CurlTransfer, didReceiveHead head: CurlResponseHead)
    /// The bytes are only valid during the call. Return `.pause` to leave them unconsumed.
    func curlTransfer(_ transfer: CurlTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition
    /// curl wants request-body bytes; copy up to buffer.count into it.
    func curlTransfer(_ transfer: CurlTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk
    /// Called once per transfer after each batch of deliveries (once per readiness round).
    func curlTransferDidFinishBatch(_ transfer: CurlTransfer)
    /// The response's trailer fields (HTTP/2 trailing HEADERS, chunked HTTP/1.1 trailers), in wire order: called at
    /// most once, after the last body bytes and right before a successful `didCompleteWith`, and only when there
    /// are some. The default implementation ignores them.
    func curlTransfer(_ transfer: CurlTransfer, didReceiveTrailers trailers: [CurlHeader])
    /// Exactly once. After this the transfer is dead and the driver holds no reference to the delegate.
    func curlTransfer(_ transfer: CurlTransfer, didCompleteWith result: Result<Void, CurlTransferError>)
}

extension CurlTransferDelegate {
    public func curlTransfer(_ transfer: CurlTransfer, didReceiveTrailers trailers: [CurlHeader]) {}
}
