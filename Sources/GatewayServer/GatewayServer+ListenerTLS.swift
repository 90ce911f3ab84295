import GatewayConfig

extension GatewayServer {
    /// Builds the listener's TLS context from `tls` once, as a start would (`portcullis check`): throws
    /// `ConfigErrors` naming `tls.cert_file`, `tls.key_file` or `tls.client_ca_file` when a file does not load or the
    /// key is not the certificate's.
    public static func checkListenerTLS(_ tls: ListenerTLS) throws(ConfigErrors) {
        _ = try ListenerTLSContext.make(tls)
    }
}
