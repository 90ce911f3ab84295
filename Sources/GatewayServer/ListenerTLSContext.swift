import GatewayConfig
import NIOConcurrencyHelpers
import NIOSSL

/// The data listener's TLS context (DESIGN §11). Each generation builds its own from `tls` (off the event loops, at
/// start and at each reload), and activating the generation swaps it in here; every accepted connection takes the
/// current one (one lock per connection, never per request). A connection keeps the context it started with, so a
/// rotated certificate never drops an open connection, and a reload whose files do not load is refused with the
/// running context kept.
final class ListenerTLSContext: Sendable {
    private let current = NIOLockedValueBox<NIOSSLContext?>(nil)

    /// The context for a new connection; nil only before the first generation is activated.
    var context: NIOSSLContext? { current.withLockedValue { $0 } }

    func install(_ context: NIOSSLContext) {
        current.withLockedValue { $0 = context }
    }

    /// Builds a server context from the configuration's files: TLS 1.2 or 1.3 at least (swift-nio-ssl would accept
    /// 1.0), ALPN `h2` then `http/1.1`, and with `client_ca_file` a verified client certificate required, checked
    /// against that file's certificates only (without explicit roots the library would trust the system store).
    /// Errors name the JSON path of the file that did not load.
    static func make(_ tls: ListenerTLS) throws(ConfigErrors) -> NIOSSLContext {
        let chain = try certificates(tls.certFile, path: "tls.cert_file", what: "certificate chain")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: tls.keyFile, format: .pem)
        } catch {
            throw ConfigErrors([
                ConfigError(.unreadableFile, path: "tls.key_file", "cannot load a PEM private key from \(tls.keyFile): \(error)")
            ])
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = tls.minVersion == .tls13 ? .tlsv13 : .tlsv12
        configuration.applicationProtocols = ["h2", "http/1.1"]
        if let caFile = tls.clientCAFile {
            let roots = try certificates(caFile, path: "tls.client_ca_file", what: "CA certificate")
            // Required, chained to these roots; no hostname check (a client certificate names no host of ours).
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(roots)
            // Lets a client holding several certificates pick one this listener accepts.
            configuration.sendCANameList = true
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            // The certificates and the key each loaded: what fails now is the pair (a key that is not the leaf's).
            throw ConfigErrors([
                ConfigError(
                    .invalidValue, path: "tls.key_file",
                    "\(tls.keyFile) does not make a TLS context with the certificate in \(tls.certFile): \(error)")
            ])
        }
    }

    private static func certificates(_ file: String, path: String, what: String) throws(ConfigErrors) -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(file)
        } catch {
            throw ConfigErrors([ConfigError(.unreadableFile, path: path, "cannot load a PEM \(what) from \(file): \(error)")])
        }
        guard !certificates.isEmpty else {
            throw ConfigErrors([ConfigError(.invalidValue, path: path, "\(file) holds no PEM certificate")])
        }
        return certificates
    }
}
