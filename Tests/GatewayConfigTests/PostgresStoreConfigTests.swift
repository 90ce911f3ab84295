import Testing

@testable import GatewayConfig

private func store(_ json: String, env: [String: String] = [:]) throws(ConfigErrors) -> Store {
    try GatewayConfiguration.parse(
        Array(#"{"token_service": {"users_file": "u"}, "store": \#(json)}"#.utf8), baseDirectory: "/etc/portcullis", environment: env
    ).store
}

private func errors(_ json: String) -> [String] {
    do {
        _ = try store(json)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

private func url(_ text: String) throws(PostgresStore.URLError) -> PostgresStore {
    try PostgresStore.parse(text)
}

@Suite struct PostgresStoreConfigTests {
    @Test func fullExample() throws {
        let s = try store(
            #"{"type": "postgres", "url": "postgres://portcullis@db.internal:5433/gw?sslmode=verify-full", "password": "${PG}", "ca_file": "ca.pem", "pool_size": 8, "connect_timeout_ms": 500}"#,
            env: ["PG": "s3cret"])
        #expect(s.kind == .postgres)
        let pg = try #require(s.postgres)
        #expect(pg.user == "portcullis" && pg.host == "db.internal" && pg.port == 5433 && pg.database == "gw")
        #expect(pg.sslMode == .verifyFull)
        #expect(pg.password == .value("s3cret"))
        #expect(pg.caFile == "/etc/portcullis/ca.pem")
        #expect(pg.poolSize == 8 && pg.connectTimeoutMilliseconds == 500)
        // The password never shows in a description.
        #expect(!"\(pg)".contains("s3cret") && !String(reflecting: pg.password!).contains("s3cret"))
    }

    @Test func defaults() throws {
        let pg = try #require(try store(#"{"type": "postgres", "url": "postgresql://gw@10.0.0.5"}"#).postgres)
        #expect(pg.port == 5432 && pg.database == "gw" && pg.sslMode == .verifyFull)
        #expect(pg.password == nil && pg.caFile == nil)
        #expect(pg.poolSize == 4 && pg.connectTimeoutMilliseconds == 2000)
        let file = try #require(
            try store(#"{"type": "postgres", "url": "postgres://u@h/d?sslmode=disable", "password_file": "pw"}"#).postgres)
        #expect(file.password == .file("/etc/portcullis/pw"))
    }

    @Test func urlComponents() throws {
        // Percent-decoding in every component; IPv6 in brackets; an encoded path is a unix socket directory.
        let encoded = try url("postgres://app%40corp@db-1.example/my%20db?sslmode=require")
        #expect(encoded.user == "app@corp" && encoded.database == "my db" && encoded.sslMode == .require)
        let v6 = try url("postgres://u@[::1]:6543/d")
        #expect(v6.host == "::1" && v6.port == 6543)
        let v6NoPort = try url("postgresql://u@[2001:db8::5]/d?sslmode=disable")
        #expect(v6NoPort.host == "2001:db8::5" && v6NoPort.port == 5432)
        let socket = try url("postgres://u@%2Frun%2Fpostgresql:5433/d")
        #expect(socket.host == "/run/postgresql" && socket.isUnixSocket && socket.sslMode == .disable && socket.port == 5433)
        #expect(try url("postgres://u@h/").database == "u")
    }

    @Test(arguments: [
        ("mysql://u@h/d", "postgres://"),
        ("postgres://h/d", "user name"),
        ("postgres://@h/d", "user name"),
        ("postgres://u:secretpw@h/d", "password"),
        ("postgres://u@/d", "host"),
        ("postgres://u@h1,h2/d", "several hosts"),
        ("postgres://u@h:0/d", "port"),
        ("postgres://u@h:65536/d", "port"),
        ("postgres://u@h:/d", "port"),
        ("postgres://u@h:54x/d", "port"),
        ("postgres://u@[::1/d", "]"),
        ("postgres://u@[nothex]/d", "IPv6"),
        ("postgres://u@h/d/e", "database"),
        ("postgres://u@h/d#frag", "fragment"),
        ("postgres://u@h/d?sslmode=prefer", "sslmode"),
        ("postgres://u@h/d?sslmode=disable&sslmode=require", "twice"),
        ("postgres://u@h/d?connect_timeout=5", "unknown parameter"),
        ("postgres://u@h/d?application_name=x", "unknown parameter"),
        ("postgres://u@h/%ZZ", "percent"),
        ("postgres://u@h/%00", "UTF-8"),
        ("postgres://u@h/%FF", "UTF-8"),
        ("postgres://u@h o/d", "space"),
        ("postgres://u@h_ö/d", "non-ASCII"),
        ("postgres://u@ho%2Fst/d", "host"),
        ("postgres://u@%2Ftmp/d?sslmode=verify-full", "unix socket"),
    ])
    func refusedURLs(text: String, reason: String) {
        #expect(throws: PostgresStore.URLError.self) { _ = try url(text) }
        do {
            _ = try url(text)
        } catch {
            #expect(error.message.contains(reason), "\(text): \(error.message)")
            #expect(!error.message.contains("secretpw"))
        }
    }

    @Test func errorsNameTheKey() {
        #expect(errors(#"{"type": "postgres"}"#) == ["store.url: is required"])
        #expect(errors(#"{"type": "postgres", "url": "postgres://u@h/d?x=1"}"#).first?.hasPrefix("store.url: unknown parameter") == true)
        #expect(
            errors(#"{"type": "postgres", "url": "postgres://u@h/d", "password": "a", "password_file": "b"}"#)
                == ["store.password_file: give password or password_file, not both"])
        #expect(errors(#"{"type": "postgres", "url": "postgres://u@h/d", "password": ""}"#).first?.hasPrefix("store.password:") == true)
        #expect(
            errors(#"{"type": "postgres", "url": "postgres://u@h/d?sslmode=require", "ca_file": "ca.pem"}"#).first?.hasPrefix(
                "store.ca_file:") == true)
        #expect(errors(#"{"type": "postgres", "url": "postgres://u@h/d", "pool_size": 0}"#).first?.hasPrefix("store.pool_size:") == true)
        #expect(
            errors(#"{"type": "postgres", "url": "postgres://u@h/d", "connect_timeout_ms": 50}"#).first?.hasPrefix(
                "store.connect_timeout_ms:") == true)
        #expect(errors(#"{"type": "postgres", "url": "postgres://u@h/d", "path": "x.db"}"#).first?.hasPrefix("store.path:") == true)
        #expect(errors(#"{"type": "postgres", "url": "postgres://u@h/d", "bogus": 1}"#).first?.hasPrefix("store.bogus:") == true)
        // Keys of the other type are refused rather than ignored.
        #expect(errors(#"{"type": "sqlite", "url": "postgres://u@h/d"}"#).first?.hasPrefix("store.url:") == true)
        #expect(errors(#"{"password": "x"}"#).first?.hasPrefix("store.password:") == true)
    }
}

@Suite struct SigningKeyEncryptionConfigTests {
    private func service(_ signing: String, env: [String: String] = [:]) throws(ConfigErrors) -> TokenService? {
        try GatewayConfiguration.parse(
            Array(#"{"token_service": {"users_file": "u", "signing": \#(signing)}}"#.utf8), baseDirectory: "/etc/portcullis",
            environment: env
        ).tokenService
    }

    private func errors(_ signing: String) -> [String] {
        do {
            _ = try service(signing)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    @Test func keysAndDefaults() throws {
        let plain = try #require(try service("{}"))
        #expect(plain.keyEncryptionKey == nil && plain.activationDelaySeconds == 60)
        let secret = String(repeating: "k", count: 32)
        let s = try #require(try service(#"{"key_encryption_key": "${KEK}", "activation_delay_seconds": 0}"#, env: ["KEK": secret]))
        #expect(s.keyEncryptionKey == .value(secret) && s.activationDelaySeconds == 0)
        #expect(!"\(s)".contains(secret))
        #expect(try s.keyEncryptionKey?.bytes(path: "token_service.signing.key_encryption_key") == Array(secret.utf8))
        let f = try #require(try service(#"{"key_encryption_key_file": "kek"}"#))
        #expect(f.keyEncryptionKey == .file("/etc/portcullis/kek"))
    }

    @Test func refusals() {
        #expect(errors(#"{"key_encryption_key": "short"}"#) == ["token_service.signing.key_encryption_key: must be at least 32 bytes long"])
        #expect(
            errors(#"{"key_encryption_key": "0123456789abcdef0123456789abcdef", "key_encryption_key_file": "f"}"#)
                .first?.hasPrefix("token_service.signing.key_encryption_key_file:") == true)
        #expect(errors(#"{"activation_delay_seconds": -1}"#).first?.hasPrefix("token_service.signing.activation_delay_seconds:") == true)
        #expect(throws: ConfigErrors.self) {
            _ = try TokenService.SealingSecret.file("/nonexistent/kek").bytes(path: "token_service.signing.key_encryption_key")
        }
    }
}
