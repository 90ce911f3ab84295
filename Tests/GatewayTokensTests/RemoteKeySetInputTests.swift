import GatewayJSON
import Testing

@testable import GatewayTokens

/// What remote key sets read from the network and the configuration: cache headers, URLs, issuer metadata, and the
/// unverified issuer of a token with an unknown key.
@Suite struct RemoteKeySetInputTests {
    @Test func freshnessFromCacheControl() {
        func lifetime(_ fields: [String], age: String? = nil) -> Double? {
            CacheControl.freshnessLifetime(cacheControl: fields, age: age)
        }
        #expect(lifetime([]) == nil)
        #expect(lifetime(["public"]) == nil)
        #expect(lifetime(["public, max-age=300"]) == 300)
        #expect(lifetime(["MAX-AGE=60"]) == 60)
        #expect(lifetime([" max-age = 60 "]) == 60)  // leniently trimmed
        #expect(lifetime(["max-age=\"120\""]) == 120)
        #expect(lifetime(["max-age=300", "max-age=100"]) == 100)  // repeated: the smallest
        #expect(lifetime(["public, max-age=15, stale-while-revalidate=15, stale-if-error=86400"]) == 15)
        #expect(lifetime(["no-cache"]) == 0)
        #expect(lifetime(["max-age=600, no-store"]) == 0)
        #expect(lifetime(["max-age=-1"]) == nil)
        #expect(lifetime(["max-age=1e3"]) == nil)
        #expect(lifetime(["max-age="]) == nil)
        #expect(lifetime(["max-age=99999999999999999999"]) == 2_147_483_648)
        #expect(lifetime(["max-age=300"], age: "100") == 200)
        #expect(lifetime(["max-age=300"], age: "400") == 0)
        #expect(lifetime(["max-age=300"], age: "junk") == 300)
        #expect(lifetime(["s-maxage=300"]) == nil)  // for shared caches, not us
    }

    @Test func remoteURLs() throws {
        let a = try #require(RemoteURL("https://IdP.Example.com/realms/a/protocol/openid-connect/certs?x=1"))
        #expect(a.scheme == "https" && a.host == "idp.example.com" && a.port == 443)
        #expect(a.target == "/realms/a/protocol/openid-connect/certs?x=1")
        #expect(a.origin == "https://idp.example.com:443")
        #expect(a.isAllowedForKeys && !a.isLoopback)

        let b = try #require(RemoteURL("http://127.0.0.1:8080"))
        #expect(b.target == "/" && b.port == 8080 && b.isLoopback && b.isAllowedForKeys)
        let c = try #require(RemoteURL("http://[::1]:9/k"))
        #expect(c.host == "::1" && c.origin == "http://[::1]:9" && c.isLoopback)
        #expect(try #require(RemoteURL("HTTP://localhost?q")).target == "/?q")

        #expect(RemoteURL("http://idp.example.com/k")?.isAllowedForKeys == false)
        #expect(RemoteURL("http://127.evil.test/k")?.isLoopback == false)
        #expect(RemoteURL("http://127.0.0.1.nip.io/k")?.isLoopback == false)
        for bad in [
            "ftp://x/k", "https://", "https:///k", "https://user@idp/k", "https://idp/k#frag", "https://idp/a b",
            "https://idp:0/k", "https://idp:65536/k", "https://idp:x/k", "https://[::1/k", "https://::1/k", "//idp/k",
            "https://idp/\u{e9}",
        ] {
            #expect(RemoteURL(bad) == nil, "\(bad)")
        }
    }

    @Test func metadataLocations() throws {
        let plain = try #require(IssuerMetadata.candidates(issuer: "https://login.test"))
        #expect(
            plain.map(\.description) == [
                "https://login.test:443/.well-known/openid-configuration",
                "https://login.test:443/.well-known/oauth-authorization-server",
            ])
        let path = try #require(IssuerMetadata.candidates(issuer: "https://login.test/realms/a/"))
        #expect(
            path.map(\.target) == [
                "/realms/a/.well-known/openid-configuration", "/.well-known/oauth-authorization-server/realms/a",
            ])
        #expect(IssuerMetadata.candidates(issuer: "not a url") == nil)
        #expect(IssuerMetadata.candidates(issuer: "https://login.test/?tenant=a") == nil)
    }

    @Test func metadataDocuments() throws {
        func doc(_ json: String) -> [UInt8] { Array(json.utf8) }
        let url = try IssuerMetadata.jwksURI(
            from: doc(#"{"issuer":"https://login.test/r","jwks_uri":"https://keys.login.test/r/certs","token_endpoint":"x"}"#),
            issuer: "https://login.test/r")
        #expect(url.description == "https://keys.login.test:443/r/certs")

        func failure(_ json: String, issuer: String = "https://login.test") -> KeySetFetchError? {
            do {
                _ = try IssuerMetadata.jwksURI(from: doc(json), issuer: issuer)
                return nil
            } catch {
                return error
            }
        }
        // Another issuer's metadata must never make us trust its keys (OIDC Discovery §4.3, RFC 8414 §3.3).
        #expect(failure(#"{"issuer":"https://login.test/","jwks_uri":"https://login.test/k"}"#)?.message.contains("another issuer") == true)
        #expect(failure(#"{"issuer":"https://evil.test","jwks_uri":"https://login.test/k"}"#)?.code == .discoveryInvalid)
        #expect(failure(#"{"jwks_uri":"https://login.test/k"}"#)?.code == .discoveryInvalid)
        #expect(failure(#"{"issuer":"https://login.test"}"#)?.message.contains("jwks_uri") == true)
        #expect(failure(#"{"issuer":"https://login.test","jwks_uri":"http://login.test/k"}"#)?.message.contains("must be https") == true)
        #expect(failure(#"{"issuer":"https://login.test","jwks_uri":"file:///etc/passwd"}"#)?.code == .discoveryInvalid)
        #expect(failure(#"{"issuer":"https://login.test","jwks_uri":42}"#)?.code == .discoveryInvalid)
        #expect(failure(#"["issuer"]"#)?.code == .discoveryInvalid)
        #expect(
            failure(#"{"issuer":"https://login.test","issuer":"https://login.test","jwks_uri":"https://a/k"}"#)?.code == .discoveryInvalid)
        #expect(failure("<html>")?.code == .discoveryInvalid)
        // Plain http is fine to a loopback address (tests, sidecars).
        #expect(failure(#"{"issuer":"http://127.0.0.1:9","jwks_uri":"http://127.0.0.1:9/k"}"#, issuer: "http://127.0.0.1:9") == nil)
    }

    @Test func unverifiedIssuerOfATokenWithAnUnknownKey() throws {
        let verifier = TokenVerifier(issuers: [IssuerPolicy(issuer: "https://idp.test", keys: [], algorithms: [.ES256])])
        let header = b64u(#"{"alg":"ES256","kid":"rotated","typ":"at+jwt"}"#)
        let payload = b64u(#"{"iss":"https://idp.test","sub":"u","exp":9999999999}"#)
        let token = "\(header).\(payload).\(b64u([UInt8](repeating: 7, count: 64)))"
        #expect(verifier.verify(token, now: 0).failureReason == .keyUnknown)
        #expect(issuer(verifier, token) == "https://idp.test")
        #expect(issuer(verifier, "\(header).\(b64u(#"{"iss":7}"#)).AAAA") == nil)
        #expect(issuer(verifier, "\(header).\(b64u(#"{"sub":"u"}"#)).AAAA") == nil)
        #expect(issuer(verifier, "not.a token.at all") == nil)
        #expect(issuer(verifier, "") == nil)
    }

    private func issuer(_ verifier: TokenVerifier, _ token: String) -> String? {
        var token = token
        return token.withUTF8 { verifier.unverifiedIssuer(of: UnsafeRawBufferPointer($0)) }
    }
}

extension Result where Failure == TokenRejection {
    fileprivate var failureReason: TokenRejection.Reason? {
        if case .failure(let rejection) = self { return rejection.reason }
        return nil
    }
}
