import Foundation
import Testing

@testable import GatewayConfig

private func parse(_ json: String, env: [String: String] = [:]) throws(ConfigErrors) -> GatewayConfiguration {
    try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/etc/portcullis", environment: env)
}

private func errors(_ json: String, env: [String: String] = [:]) -> [String] {
    do {
        _ = try parse(json, env: env)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

private let minimal = """
    {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}},
     "routes": [{"path_prefix": "/", "upstream": "app"}],
     "issuers": [{"issuer": "https://idp.test", "public_key_file": "keys/idp.pem", "algorithms": ["ES256"]}]}
    """

@Suite struct GatewayConfigurationTests {
    @Test func defaultsAreFilledIn() throws {
        let c = try parse(minimal)
        #expect(c.listen == ListenAddress(host: "0.0.0.0", port: 8080))
        #expect(c.adminListen == ListenAddress(host: "127.0.0.1", port: 9901))
        #expect(c.limits.maxHeaderBytes == 16384)
        #expect(c.limits.maxBodyBytes == 104_857_600)
        #expect(c.auth.realm == "api")
        #expect(c.auth.audiences == ["api"])
        #expect(c.auth.leewaySeconds == 30)
        #expect(c.auth.forwardToken == false)
        #expect(c.auth.tokenCacheEntries == 65536)
        #expect(c.identityHeaders.subject == "X-Auth-Subject")
        #expect(c.identityHeaders.stripPrefix == "X-Auth-")
        #expect(c.routes[0].auth == .required)
        #expect(c.upstreams[0].origin == "http://127.0.0.1:3000")
        #expect(c.upstreams[0].connectTimeoutMs == 2000)
        #expect(c.upstreams[0].timeoutMs == 30000)
        #expect(c.issuers[0].tokenTypes == ["at+jwt", "application/at+jwt"])
        #expect(c.tokenService == nil)
        #expect(c.store.kind == .sqlite)
        #expect(c.store.path == "/etc/portcullis/data/portcullis.db")
    }

    @Test func relativePathsResolveAgainstTheConfigFolder() throws {
        let c = try parse(minimal)
        #expect(c.issuers[0].keySource == .publicKeyFile("/etc/portcullis/keys/idp.pem"))
    }

    @Test func unknownKeysAreErrorsWithTheirPath() {
        let e = errors(
            """
            {"upstreams": {"app": {"url": "http://127.0.0.1:3000", "timeout": 5}},
             "routes": [{"path_prefix": "/", "upstream": "app", "scope": ["x"]}],
             "auht": {},
             "issuers": [{"issuer": "x", "hmac_secret": "0123456789abcdef0123456789abcdef", "algorithms": ["HS256"]}]}
            """)
        #expect(e.contains("upstreams.app.timeout: unknown key"))
        #expect(e.contains("routes[0].scope: unknown key"))
        #expect(e.contains("auht: unknown key"))
    }

    @Test func routeToUnknownUpstreamNamesThePath() {
        let e = errors(
            """
            {"upstreams": {"api": {"url": "http://127.0.0.1:3000"}},
             "routes": [{"path_prefix": "/a", "upstream": "api"}, {"path_prefix": "/b", "upstream": "api"}, {"path_prefix": "/", "upstream": "ap"}],
             "issuers": [{"issuer": "x", "jwks_file": "j.json"}]}
            """)
        #expect(e == [#"routes[2].upstream: no upstream named "ap" (defined: "api")"#])
    }

    /// Found by the `config` fuzz target: an empty name was taken for a missing one (already reported) and passed,
    /// and the gateway then trapped building the data path (on start, or on a reload of a running gateway).
    @Test func anEmptyUpstreamNameIsRefusedLikeAnyUnknownName() {
        #expect(
            errors(#"{"routes": [{"path_prefix": "/", "upstream": "", "auth": "none"}]}"#)
                == [#"routes[0].upstream: no upstream named "" (defined: "demo")"#])
        #expect(
            errors(
                #"{"token_service": {"login_upstream": {"upstream": ""}}, "upstreams": {"app": {"url": "http://a"}}, "routes": [{"path_prefix": "/", "upstream": "app"}]}"#
            ) == [#"token_service.login_upstream.upstream: no upstream named """#])
        // A missing name is reported once, as missing.
        #expect(errors(#"{"routes": [{"path_prefix": "/", "auth": "none"}]}"#) == ["routes[0].upstream: is required"])
    }

    @Test func environmentSubstitution() throws {
        let json = """
            {"upstreams": {"app": {"url": "${APP_URL}"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
             "issuers": [{"issuer": "legacy", "hmac_secret": "${SECRET}", "algorithms": ["HS256"]}]}
            """
        let c = try parse(json, env: ["APP_URL": "http://10.0.0.1:81/base/", "SECRET": String(repeating: "s", count: 32)])
        #expect(c.upstreams[0].host == "10.0.0.1")
        #expect(c.upstreams[0].port == 81)
        #expect(c.upstreams[0].basePath == "/base")
        #expect(c.issuers[0].keySource == .hmacSecret(String(repeating: "s", count: 32)))
        let e = errors(json, env: ["APP_URL": "http://a"])
        #expect(e == ["issuers[0].hmac_secret: environment variable SECRET is not set"])
    }

    @Test func literalDollarBraceEscape() {
        let sink = ErrorSink()
        #expect(EnvironmentSubstitution.substitute("a$${B}c$", environment: [:], path: [], sink: sink) == "a${B}c$")
        #expect(sink.errors.isEmpty)
    }

    @Test func wrongTypesAndRanges() {
        let e = errors(
            """
            {"listen": "8080", "limits": {"max_header_bytes": "big", "drain_seconds": -1},
             "upstreams": {"app": {"url": "ftp://x"}}, "routes": [{"path_prefix": "admin", "upstream": "app", "auth": "sometimes", "methods": ["get"]}],
             "auth": {"forward_token": "yes", "leeway_seconds": 1.5},
             "issuers": [{"issuer": "x", "jwks_file": "j.json", "algorithms": ["none", "HS999"]}]}
            """)
        #expect(e.contains { $0.hasPrefix("listen: expected \"host:port\"") })
        #expect(e.contains("limits.max_header_bytes: expected an integer, found a string"))
        #expect(e.contains("limits.drain_seconds: must be between 0 and 3600, found -1"))
        #expect(e.contains { $0.hasPrefix("upstreams.app.url: expected an absolute http://") })
        #expect(e.contains { $0.hasPrefix("routes[0].path_prefix: must start with \"/\"") })
        #expect(e.contains { $0.hasPrefix("routes[0].auth: must be one of") })
        #expect(e.contains { $0.hasPrefix("routes[0].methods[0]: expected an upper-case HTTP method") })
        #expect(e.contains("auth.forward_token: expected true or false, found a string"))
        #expect(e.contains("auth.leeway_seconds: expected an integer, found a fraction"))
        #expect(e.contains("issuers[0].algorithms[0]: \"none\" is never allowed"))
        #expect(e.contains { $0.hasPrefix("issuers[0].algorithms[1]: unsupported algorithm \"HS999\"") })
    }

    @Test func issuerKeySourcesAreExclusiveAndHMACIsExplicit() {
        let e = errors(
            """
            {"upstreams": {"app": {"url": "http://127.0.0.1:1"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
             "issuers": [
               {"issuer": "a"},
               {"issuer": "b", "jwks_file": "x", "public_key_file": "y"},
               {"issuer": "c", "hmac_secret": "short", "algorithms": ["HS256"]},
               {"issuer": "d", "hmac_secret": "0123456789abcdef0123456789abcdef", "algorithms": ["RS256"]},
               {"issuer": "e", "public_key_file": "k.pem", "algorithms": ["HS256"]},
               {"issuer": "f", "jwks_uri": "http://idp.example.com/jwks"},
               {"issuer": "a", "jwks_uri": "http://127.0.0.1:9/jwks"}
             ]}
            """)
        #expect(e.contains { $0.hasPrefix("issuers[0]: needs exactly one key source") })
        #expect(e.contains { $0.hasPrefix("issuers[1]: has several key sources (jwks_file, public_key_file)") })
        #expect(e.contains("issuers[2].hmac_secret: must be at least 32 bytes long"))
        #expect(e.contains("issuers[3].algorithms: an HMAC secret can only be used with HS256, HS384 or HS512"))
        #expect(e.contains { $0.hasPrefix("issuers[4].algorithms: HS* algorithms need") })
        #expect(e.contains { $0.hasPrefix("issuers[5].jwks_uri: must be an https:// URL") })
        #expect(e.contains { $0.hasPrefix("issuers[6].issuer: issuer \"a\" is listed twice") })
    }

    @Test func defaultAlgorithmsAreAsymmetricOnly() throws {
        let c = try parse(minimal.replacingOccurrences(of: #", "algorithms": ["ES256"]"#, with: ""))
        #expect(!c.issuers[0].algorithms.contains { $0.hasPrefix("HS") })
        #expect(c.issuers[0].algorithms.contains("EdDSA"))
    }

    @Test func demoUpstreamWhenNoneConfigured() throws {
        let c = try parse(#"{"issuers": [{"issuer": "x", "jwks_file": "j.json"}]}"#)
        #expect(c.upstreams.count == 1)
        #expect(c.upstreams[0].isEmbeddedDemo)
        #expect(c.routes.map(\.pathPrefix) == ["/"])
    }

    @Test func routesRequiredWithRealUpstreams() {
        #expect(
            errors(#"{"upstreams": {"app": {"url": "http://127.0.0.1:1"}}, "issuers": [{"issuer": "x", "jwks_file": "j"}]}"#)
                == ["routes: is required when upstreams are configured"])
    }

    @Test func protectedRoutesNeedAnIssuer() {
        #expect(
            errors(#"{"upstreams": {"app": {"url": "http://127.0.0.1:1"}}, "routes": [{"path_prefix": "/", "upstream": "app"}]}"#)
                .first?.hasPrefix("issuers: no issuer is configured") == true)
        #expect(
            errors(
                #"{"upstreams": {"app": {"url": "http://127.0.0.1:1"}}, "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}]}"#
            ).isEmpty)
    }

    @Test func syntaxErrorsNameThePath() {
        #expect(
            errors(#"{"routes": [{"path_prefix": "/", "path_prefix": "/x"}]}"#).first?.hasPrefix("routes[0].path_prefix: duplicate member")
                == true)
    }

    @Test func pathPrefixMustBeCanonical() {
        for bad in ["/a//b", "/a/../b", "/a/./b", "/a%2fb", "/a;b", "/é"] {
            let e = errors(
                """
                {"upstreams": {"app": {"url": "http://127.0.0.1:1"}}, "routes": [{"path_prefix": "\(bad)", "upstream": "app", "auth": "none"}]}
                """)
            #expect(e.first?.hasPrefix("routes[0].path_prefix: must be a canonical path") == true, "\(bad)")
        }
    }

    @Test func identityHeaderNamesAreValidated() {
        let e = errors(
            """
            {"upstreams": {"app": {"url": "http://127.0.0.1:1"}}, "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}],
             "identity_headers": {"subject": "X Auth", "claims": {"email": "X-Auth-Email", "roles": "bad:header"}}}
            """)
        #expect(e.contains { $0.hasPrefix("identity_headers.subject:") })
        #expect(e.contains { $0.hasPrefix("identity_headers.claims.roles:") })
    }

    @Test func tokenServiceIssuerIsNotListedAgain() {
        let e = errors(
            """
            {"token_service": {"issuer": "https://gw.test", "users_file": "u.json"}, "issuers": [{"issuer": "https://gw.test", "jwks_file": "j.json"}]}
            """)
        #expect(e.first?.hasPrefix("issuers[0].issuer: \"https://gw.test\" is the token service's own issuer") == true)
    }

    @Test func tokenServiceDefaults() throws {
        let c = try parse(#"{"token_service": {"users_file": "users.json"}}"#)
        let service = try #require(c.tokenService)
        #expect(service.issuer == "http://localhost:8080")
        #expect(service.audience == "api")
        #expect(service.signingAlgorithm == "ES256")
        #expect(service.keyDirectory == "/etc/portcullis/data/keys")
        #expect(service.accessTokenTTLSeconds == 900)
        #expect(service.loginLimits == .init())
        #expect(c.store.kind == .sqlite && c.store.path == "/etc/portcullis/data/portcullis.db")
        // Credentials must come from somewhere, and from one place.
        #expect(errors(#"{"token_service": {}}"#).first?.hasPrefix("token_service.users_file:") == true)
        #expect(
            errors(
                #"{"token_service": {"users_file": "u", "login_upstream": {"upstream": "app"}}, "upstreams": {"app": {"url": "http://a"}}, "routes": [{"path_prefix": "/", "upstream": "app"}]}"#
            )
            .contains { $0.hasPrefix("token_service.login_upstream:") })
        #expect(errors(#"{"store": {"type": "postgres", "url": "postgres://x"}}"#).first?.hasPrefix("store.url:") == true)
        #expect(try parse(#"{"token_service": {"enabled": false}, "routes": [], "upstreams": {}}"#).tokenService == nil)
    }

    @Test func tokenServiceRanges() {
        #expect(
            errors(#"{"token_service": {"users_file": "u", "access_token_ttl_seconds": 0}}"#).first?.hasPrefix(
                "token_service.access_token_ttl_seconds:") == true)
        #expect(
            errors(#"{"token_service": {"users_file": "u", "login_limits": {"per_username": 0}}}"#).first?.hasPrefix(
                "token_service.login_limits.per_username:") == true)
        #expect(
            errors(#"{"token_service": {"users_file": "u", "login_limits": {"burst": 1}}}"#).first?.hasPrefix(
                "token_service.login_limits.burst:") == true)
        #expect(
            errors(#"{"token_service": {"users_file": "u", "path_prefix": "/"}}"#).first?.hasPrefix("token_service.path_prefix:") == true)
    }

    @Test func listenAddresses() {
        #expect(parseHostPort("127.0.0.1:8080") == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(parseHostPort("[::1]:9") == ListenAddress(host: "::1", port: 9))
        #expect(parseHostPort("::1:9") == nil)
        #expect(parseHostPort("host:99999") == nil)
        #expect(parseHostPort(":80") == nil)
    }

    @Test func remoteKeySetSettingsHaveDefaultsAndBounds() throws {
        let c = try parse(
            """
            {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
             "issuers": [
               {"issuer": "https://idp.test", "jwks_uri": "https://idp.test/keys"},
               {"issuer": "https://login.test/realms/a", "discovery": true, "ca_file": "ca.pem",
                "jwks_refetch_cooldown_seconds": 2, "jwks_min_refresh_seconds": 5, "jwks_max_refresh_seconds": 50,
                "jwks_max_stale_seconds": 0, "jwks_fetch_timeout_ms": 750}
             ]}
            """)
        let a = c.issuers[0]
        #expect(a.isRemote)
        #expect(a.jwksRefetchCooldownSeconds == 10)
        #expect(a.jwksMinRefreshSeconds == 60)
        #expect(a.jwksMaxRefreshSeconds == 900)
        #expect(a.jwksMaxStaleSeconds == 86400)
        #expect(a.jwksFetchTimeoutMs == 5000)
        let b = c.issuers[1]
        #expect(b.keySource == .discovery)
        #expect(b.caFile == "/etc/portcullis/ca.pem")
        #expect((b.jwksRefetchCooldownSeconds, b.jwksMinRefreshSeconds, b.jwksMaxRefreshSeconds) == (2, 5, 50))
        #expect((b.jwksMaxStaleSeconds, b.jwksFetchTimeoutMs) == (0, 750))
        // A minimum above the default maximum raises the maximum with it.
        let raised = try parse(
            minimal.replacingOccurrences(
                of: #""public_key_file": "keys/idp.pem", "algorithms": ["ES256"]"#,
                with: #""jwks_uri": "https://idp.test/k", "jwks_min_refresh_seconds": 3600"#))
        #expect(raised.issuers[0].jwksMaxRefreshSeconds == 3600)
    }

    @Test func remoteKeySetSettingsAreValidated() {
        let e = errors(
            """
            {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
             "issuers": [
               {"issuer": "https://a.test", "jwks_uri": "https://a.test/k", "jwks_min_refresh_seconds": 100,
                "jwks_max_refresh_seconds": 10, "jwks_fetch_timeout_ms": 5},
               {"issuer": "b", "public_key_file": "k.pem", "algorithms": ["ES256"], "ca_file": "ca.pem",
                "jwks_refetch_cooldown_seconds": 5},
               {"issuer": "c", "jwks_uri": "http://127.evil.test/keys"},
               {"issuer": "http://127.0.0.1.nip.io/x", "discovery": true},
               {"issuer": "https://b2c.test/t?p=x", "discovery": true},
               {"issuer": "https://b2c.test/t", "jwks_uri": "https://b2c.test/t/discovery/v2.0/keys?p=b2c_1_signin"}
             ]}
            """)
        #expect(e.contains("issuers[0].jwks_max_refresh_seconds: must not be less than jwks_min_refresh_seconds (100)"))
        #expect(e.contains("issuers[0].jwks_fetch_timeout_ms: must be between 100 and 60000, found 5"))
        #expect(e.contains("issuers[1].ca_file: only applies to an issuer with jwks_uri or discovery"))
        #expect(e.contains("issuers[1].jwks_refetch_cooldown_seconds: only applies to an issuer with jwks_uri or discovery"))
        #expect(e.contains { $0.hasPrefix("issuers[2].jwks_uri: must be an https:// URL") })
        #expect(e.contains { $0.hasPrefix("issuers[3].discovery: needs an issuer that is an https:// URL") })
        #expect(e.contains { $0.hasPrefix("issuers[4].discovery: needs an issuer that is an https:// URL") })
        #expect(e.count == 7, "\(e)")  // a key set URL may have a query
    }

    @Test func loopbackIsADottedQuadOrLocalhost() {
        #expect(isLoopbackHost("127.0.0.1"))
        #expect(isLoopbackHost("127.1.2.3"))
        #expect(isLoopbackHost("localhost"))
        #expect(isLoopbackHost("::1"))
        #expect(!isLoopbackHost("127.evil.test"))
        #expect(!isLoopbackHost("127.0.0.1.nip.io"))
        #expect(!isLoopbackHost("127.0.0.256"))
        #expect(!isLoopbackHost("128.0.0.1"))
    }

    @Test func theShippedConfigurationIsValid() throws {
        // Tests run from the package root.
        let c = try GatewayConfiguration.load(path: "gateway.json", environment: [:])
        #expect(c.upstreams.first?.isEmbeddedDemo == true)
        #expect(c.tokenService?.keyDirectory.hasSuffix("data/keys") == true)
    }
}
