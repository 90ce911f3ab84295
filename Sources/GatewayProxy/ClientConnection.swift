/// What the gateway knows about the client connection a request arrived on, fixed when the connection (or its
/// HTTP/2 stream) is set up: the forwarding headers and the identity injected upstream depend on it.
public struct ClientConnection: Sendable, Hashable {
    /// TLS ended at the gateway (`X-Forwarded-Proto: https`).
    public var isSecure: Bool
    /// The request is one HTTP/2 stream: each stream carries one request, and HTTP/2 has no `Connection` header.
    public var isHTTP2: Bool
    /// The verified client certificate's subject (RFC 4514 form), on mTLS connections; read once at the handshake.
    public var clientCertificateSubject: String?

    public init(isSecure: Bool = false, isHTTP2: Bool = false, clientCertificateSubject: String? = nil) {
        self.isSecure = isSecure
        self.isHTTP2 = isHTTP2
        self.clientCertificateSubject = clientCertificateSubject
    }

    /// A cleartext HTTP/1.1 connection.
    public static let plain = ClientConnection()
}
