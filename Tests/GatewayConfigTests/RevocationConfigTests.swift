import Testing

@testable import GatewayConfig

/// The revocation-feed keys (DESIGN §9): `token_service.revocations_feed_token` and the issuer entries'
/// `revocations_uri` / `revocations_token`.
@Suite struct RevocationConfigTests {
    static let secret = String(repeating: "s", count: 32)

    func parse(_ json: String, env: [String: String] = [:]) throws(ConfigErrors) -> GatewayConfiguration {
        try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/etc/portcullis", environment: env)
    }

    func errors(_ json: String, env: [String: String] = [:]) -> [String] {
        do {
            _ = try parse(json, env: env)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    func follower(_ issuerExtra: String) -> String {
        """
        {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
         "issuers": [{"issuer": "https://idp.test", "jwks_uri": "https://idp.test/jwks.json"\(issuerExtra)}]}
        """
    }

    func service(_ extra: String) -> String {
        """
        {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
         "token_service": {"users_file": "users.json"\(extra)}}
        """
    }

    @Test func followerKeysDecode() throws {
        let c = try parse(
            follower(#", "revocations_uri": "https://idp.test/auth/revocations?x=1", "revocations_token": "${FEED}""#),
            env: ["FEED": Self.secret])
        #expect(c.issuers[0].revocationsURI == "https://idp.test/auth/revocations?x=1")
        #expect(c.issuers[0].revocationsToken == Self.secret)
        let loopback = try parse(
            follower(#", "revocations_uri": "http://127.0.0.1:8080/auth/revocations", "revocations_token": "\#(Self.secret)""#))
        #expect(loopback.issuers[0].revocationsURI == "http://127.0.0.1:8080/auth/revocations")
        // ca_file serves the feed too, also for an issuer whose keys are local.
        let local = try parse(
            """
            {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
             "issuers": [{"issuer": "https://idp.test", "public_key_file": "k.pem", "algorithms": ["ES256"], "ca_file": "ca.pem",
                          "revocations_uri": "https://idp.test/auth/revocations", "revocations_token": "\(Self.secret)"}]}
            """)
        #expect(local.issuers[0].caFile == "/etc/portcullis/ca.pem")
        #expect(try parse(follower("")).issuers[0].revocationsURI == nil)
    }

    @Test func followerKeysAreChecked() {
        #expect(
            errors(follower(#", "revocations_uri": "http://idp.test/auth/revocations", "revocations_token": "\#(Self.secret)""#))
                .contains { $0.contains("issuers[0].revocations_uri") })
        #expect(
            errors(follower(#", "revocations_uri": "https://idp.test/auth/revocations""#))
                .contains { $0.contains("issuers[0].revocations_token") })
        #expect(errors(follower(#", "revocations_token": "\#(Self.secret)""#)).contains { $0.contains("issuers[0].revocations_token") })
        let short = errors(follower(#", "revocations_uri": "https://idp.test/r", "revocations_token": "short-secret""#))
        #expect(short.contains { $0.contains("issuers[0].revocations_token") && $0.contains("32 bytes") })
        #expect(!short.joined().contains("short-secret"))
    }

    @Test func feedSecret() throws {
        #expect(try parse(service("")).tokenService?.revocationsFeedToken == nil)
        #expect(
            try parse(service(#", "revocations_feed_token": "${FEED}""#), env: ["FEED": Self.secret]).tokenService?.revocationsFeedToken
                == Self.secret)
        let short = errors(service(#", "revocations_feed_token": "short""#))
        #expect(short.contains { $0.contains("token_service.revocations_feed_token") && $0.contains("32 bytes") })
    }
}
