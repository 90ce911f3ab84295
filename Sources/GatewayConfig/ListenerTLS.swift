/// TLS on the data listener (`"tls"` in gateway.json, DESIGN §11). Paths are resolved against the configuration
/// file's folder; the files themselves are read when the listener's TLS context is built (at start and at each
/// reload, so a rotated certificate is picked up without a restart).
public struct ListenerTLS: Sendable, Hashable {
    /// The lowest protocol version the listener accepts.
    public enum MinimumVersion: String, Sendable, Hashable, CaseIterable {
        case tls12 = "1.2"
        case tls13 = "1.3"
    }

    /// PEM certificate chain, leaf first.
    public var certFile: String
    /// PEM private key of the leaf certificate.
    public var keyFile: String
    /// PEM CA certificates that client certificates must chain to. When set, every connection must present a
    /// verified client certificate (mTLS), checked against these roots only, never the system store.
    public var clientCAFile: String?
    public var minVersion: MinimumVersion = .tls12

    public init(certFile: String, keyFile: String, clientCAFile: String? = nil, minVersion: MinimumVersion = .tls12) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
        self.minVersion = minVersion
    }

    /// The files the context is built from, for watching them for changes.
    public var files: [String] { [certFile, keyFile] + (clientCAFile.map { [$0] } ?? []) }
}
