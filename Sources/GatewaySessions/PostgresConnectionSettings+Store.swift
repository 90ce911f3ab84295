import GatewayConfig

extension PostgresConnectionSettings {
    /// The settings of a decoded `store` block of `type: postgres`, reading `password_file` (trailing newlines
    /// dropped). Throws `ConfigErrors` naming `store.password_file` when the file cannot be read or is empty.
    public init(_ store: PostgresStore) throws(ConfigErrors) {
        var password: String?
        switch store.password {
        case .value(let value):
            password = value
        case .file(let path):
            let bytes: [UInt8]
            do {
                bytes = try GatewayConfiguration.readReferencedFile(path)
            } catch {
                throw ConfigErrors([ConfigError(.unreadableFile, path: "store.password_file", error.message)])
            }
            var text = String(decoding: bytes, as: UTF8.self)
            while let last = text.unicodeScalars.last, last == "\n" || last == "\r" { text.unicodeScalars.removeLast() }
            guard !text.isEmpty else {
                throw ConfigErrors([ConfigError(.invalidValue, path: "store.password_file", "\(path) is empty")])
            }
            password = text
        case nil:
            password = nil
        }
        let tls: TLSMode =
            switch store.sslMode {
            case .disable: .disable
            case .require: .require
            case .verifyFull: .verifyFull(caFile: store.caFile)
            }
        self.init(
            host: store.host, port: store.port, user: store.user, password: password, database: store.database, tls: tls,
            poolSize: store.poolSize, connectTimeoutMilliseconds: store.connectTimeoutMilliseconds)
    }
}
