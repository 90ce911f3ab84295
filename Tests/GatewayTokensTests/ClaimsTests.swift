import GatewayJSON
import Testing

@testable import GatewayTokens

/// Claim attacks (cases T-*) and the claim rules of DESIGN §4. Leeway is 30 s; NOW = T.now.
@Suite struct ClaimsTests {
    let now = Int(T.now)

    func reason(_ overrides: [String: String?], verifier: TokenVerifier = T.verifier, now: Double = T.now) -> String {
        T.reason(T.ok(.ES256, claims: T.claims(overrides)), verifier: verifier, now: now)
    }

    @Test func expiry() {
        #expect(reason(["exp": "\(now - 61)"]) == "token_expired")  // T-exp-past
        #expect(reason(["exp": "\(now - 31)"]) == "token_expired")
        // T-leeway-boundary: rejected when exp <= now - leeway, accepted when exp > now - leeway.
        #expect(reason(["exp": "\(now - 30)"]) == "token_expired")
        #expect(reason(["exp": "\(now - 29)"]) == "ok")  // OK-exp-in-leeway
        #expect(reason(["exp": "\(now - 30).5"]) == "ok")
        #expect(reason(["exp": "\(now - 30)"], now: T.now - 0.001) == "ok")
        #expect(reason(["exp": "\(now)"]) == "ok")
        // Leeway 0: exp == now is expired, exp == now + 0.5 is not.
        let strict = TokenVerifier(issuers: [T.policy()], leeway: 0)
        #expect(reason(["exp": "\(now)"], verifier: strict) == "token_expired")
        #expect(reason(["exp": "\(now).5"], verifier: strict) == "ok")
        #expect(reason(["exp": "\(now - 1)"], verifier: strict) == "token_expired")
    }

    @Test func expiredDescriptionIsExact() {
        let result = T.verifier.verify(T.ok(.ES256, claims: T.claims(["exp": "\(now - 100)"])), now: T.now)
        guard case .failure(let rejection) = result else {
            Issue.record("expired token accepted")
            return
        }
        #expect(rejection.reason == .tokenExpired)
        #expect(rejection.errorDescription == "The access token expired")
    }

    @Test func notBefore() {
        #expect(reason(["nbf": "\(now + 61)"]) == "token_not_yet_valid")  // T-nbf-future
        #expect(reason(["nbf": "\(now + 31)"]) == "token_not_yet_valid")
        #expect(reason(["nbf": "\(now + 30).5"]) == "token_not_yet_valid")
        #expect(reason(["nbf": "\(now + 30)"]) == "ok")  // OK-nbf-in-leeway (nbf > now + leeway is refused)
        #expect(reason(["nbf": nil]) == "ok")
        let strict = TokenVerifier(issuers: [T.policy()], leeway: 0)
        #expect(reason(["nbf": "\(now)"], verifier: strict) == "ok")
        #expect(reason(["nbf": "\(now + 1)"], verifier: strict) == "token_not_yet_valid")
    }

    @Test func issuedAt() {
        #expect(reason(["iat": "\(now + 3600)"]) == "claims_invalid")  // T-iat-future
        #expect(reason(["iat": "\(now + 31)"]) == "claims_invalid")
        #expect(reason(["iat": "\(now + 30)"]) == "ok")
        #expect(reason(["iat": nil]) == "ok")
        #expect(reason(["iat": "0"]) == "ok")
    }

    @Test func numericDateTypesAndRanges() {
        for claim in ["exp", "nbf", "iat"] {
            for bad in [
                "\"1767225900\"", "true", "false", "null", "[\(now + 300)]", "{}",  // T-*-string/-bool/-null/-array
                "-1", "-0", "-0.0", "-1e-300",  // T-exp-neg and negative zero
                "1e300", "9223372036854775808", "18446744073709551616", "9007199254740994", "1.7976931348623157e308",
            ] {
                #expect(reason([claim: bad]) == "claims_invalid", "\(claim): \(bad)")
            }
        }
        // 2^53 is the largest accepted NumericDate.
        #expect(reason(["exp": "9007199254740992"]) == "ok")
        #expect(reason(["exp": "9007199254740993"]) == "ok")  // rounds to 2^53 as a double; fine
        #expect(reason(["exp": "1e16"]) == "claims_invalid")
        #expect(reason(["exp": "1.7672259e9"]) == "ok")
        // nbf/iat at 0 are valid dates.
        #expect(reason(["nbf": "0", "iat": "0"]) == "ok")
    }

    @Test func requiredClaims() {
        #expect(reason(["exp": nil]) == "claims_invalid")  // T-exp-missing
        #expect(reason(["sub": nil]) == "claims_invalid")  // T-sub-missing
        #expect(reason(["iss": nil]) == "claims_invalid")  // T-iss-missing
        #expect(reason(["aud": nil]) == "claims_invalid")  // T-aud-missing (audiences configured)
        // Without configured audiences, aud is not required.
        let noAud = TokenVerifier(issuers: [T.policy(audiences: [])])
        #expect(reason(["aud": nil], verifier: noAud) == "ok")
        #expect(reason(["aud": "\"anything\""], verifier: noAud) == "ok")
        // Listed claims (RFC 9068 §2.2 profile).
        let profile = TokenVerifier(issuers: [T.policy(requiredClaims: ["iat", "jti", "client_id"])])
        #expect(reason([:], verifier: profile) == "ok")
        for claim in ["iat", "jti", "client_id"] {  // T-iat-missing / T-jti-missing / T-clientid-missing
            #expect(reason([claim: nil], verifier: profile) == "claims_invalid", "\(claim)")
        }
        #expect(reason(["client_id": "null"], verifier: profile) == "claims_invalid")
        #expect(reason(["client_id": "\"\""], verifier: profile) == "ok")
    }

    @Test func issuerComparison() {
        for iss in [
            "https://evil.test", "https://issuer.test/", "https://ISSUER.test", "https://issuer.test.evil", "https://issuer",
            "", " https://issuer.test", "https://issuer.test\\u0000",
        ] {
            #expect(reason(["iss": "\"\(iss)\""]) == "issuer_unknown", "\(iss)")
        }
        for iss in ["[\"https://issuer.test\"]", "1", "null", "{\"iss\":\"https://issuer.test\"}", "true"] {
            #expect(reason(["iss": iss]) == "claims_invalid", "\(iss)")  // T-iss-array and other types
        }
    }

    @Test func audience() {
        #expect(reason(["aud": "\"https://other.test\""]) == "audience_mismatch")  // T-aud-mismatch
        #expect(reason(["aud": "\"https://api.test.evil\""]) == "audience_mismatch")  // T-aud-prefix
        #expect(reason(["aud": "\"http://api.test/\""]) == "audience_mismatch")  // T-aud-scheme-slash
        #expect(reason(["aud": "\"api.test\""]) == "audience_mismatch")
        #expect(reason(["aud": "\"https://api.test/\""]) == "audience_mismatch")
        #expect(reason(["aud": "\"HTTPS://API.TEST\""]) == "audience_mismatch")
        #expect(reason(["aud": "[]"]) == "audience_mismatch")  // T-aud-empty-array
        #expect(reason(["aud": "[\"https://other.test\"]"]) == "audience_mismatch")
        #expect(reason(["aud": "[\"https://other.test\",\"https://api.test\"]"]) == "ok")  // OK-aud-array
        #expect(reason(["aud": "[[\"https://api.test\"]]"]) == "claims_invalid")  // T-aud-nested
        #expect(reason(["aud": "[1]"]) == "claims_invalid")  // T-aud-int
        #expect(reason(["aud": "[\"https://api.test\",1]"]) == "claims_invalid")
        #expect(reason(["aud": "1"]) == "claims_invalid")
        #expect(reason(["aud": "null"]) == "claims_invalid")
        #expect(reason(["aud": "{}"]) == "claims_invalid")
        // Several configured audiences: any overlap is enough.
        let multi = TokenVerifier(issuers: [T.policy(audiences: ["https://a.test", "https://api.test"])])
        #expect(reason([:], verifier: multi) == "ok")
    }

    @Test func claimTypes() {
        #expect(reason(["sub": "42"]) == "claims_invalid")  // T-sub-int
        #expect(reason(["sub": "null"]) == "claims_invalid")
        #expect(reason(["sub": "[\"a\"]"]) == "claims_invalid")
        #expect(reason(["scope": "[\"read\"]"]) == "claims_invalid")  // T-scope-array
        #expect(reason(["scope": "1"]) == "claims_invalid")
        #expect(reason(["scope": "null"]) == "claims_invalid")
        #expect(reason(["scope": nil, "scp": "\"read\""]) == "claims_invalid")
        #expect(reason(["scope": nil, "scp": "[\"read\",1]"]) == "claims_invalid")
        #expect(reason(["scp": "{}"]) == "claims_invalid")
        #expect(reason(["jti": "1"]) == "claims_invalid")
        #expect(reason(["sid": "1"]) == "claims_invalid")
        #expect(reason(["sid": nil, "jti": nil, "scope": nil]) == "ok")
    }

    @Test func claimValuesAreReturnedVerbatim() throws {
        // T-sub-crlf / T-sub-nul: the verifier neither truncates nor rewrites claim values; encoding them into
        // headers is the proxy's job (it must never emit them raw).
        let token = T.ok(.ES256, claims: T.claims(["sub": "\"alice\\r\\nX-Admin: true\"", "name": "\"a\\u0000b\""]))
        let verified = try T.verifier.verify(token, now: T.now).get()
        #expect(verified.subject == "alice\r\nX-Admin: true")
        #expect(verified.claims["name"] == .string("a\u{0}b"))
        // T-scope-substring is a route-level check; here scopes are exact tokens.
        let readonly = try T.verifier.verify(T.ok(claims: T.claims(["scope": "\"readonly write\""])), now: T.now).get()
        #expect(readonly.scopes == ["readonly", "write"])
        #expect(!readonly.scopes.contains("read"))
    }

    @Test func emptyAndNonObjectPayloads() {
        let header = b64u(T.header(.ES256))
        let signer = TestSigner.trusted(.ES256)
        let emptyPayload = header + "." + "." + b64u(signer.sign(Array((header + ".").utf8)))
        #expect(T.reason(emptyPayload) == "token_malformed")
        #expect(T.reason(T.token(header: T.header(.ES256), payload: "{}", signer: signer)) == "claims_invalid")
    }

    @Test func checkOrder() {
        // The signature is checked before typ and claims: a forged token with bad claims reports the signature.
        let forged = T.token(header: T.header(.ES256), payload: T.claims(["exp": "\(now - 1000)"]), signer: .p256(TestKeys.p256Other))
        #expect(T.reason(forged) == "signature_invalid")
        let badTyp = T.token(
            header: T.header("ES256", kid: "es256-1", typ: "JWT"), payload: T.claims(["exp": "\(now - 1000)"]), signer: .trusted(.ES256))
        #expect(T.reason(badTyp) == "token_type_invalid")
    }
}

@Suite struct RejectionTests {
    @Test func descriptionsAreFixedAndSafe() {
        #expect(TokenRejection.Reason.allReasons.count == 11)
        var seen: Set<String> = []
        for reason in TokenRejection.Reason.allReasons {
            let rejection = TokenRejection(reason)
            #expect(!rejection.errorDescription.isEmpty)
            seen.insert(rejection.errorDescription)
            // RFC 6750 §3: error_description = *( %x20-21 / %x23-5B / %x5D-7E )
            for byte in rejection.errorDescription.utf8 {
                let ok = byte == 0x20 || byte == 0x21 || (0x23...0x5B).contains(byte) || (0x5D...0x7E).contains(byte)
                #expect(ok, "\(reason.rawValue)")
            }
        }
        #expect(seen.count == 11)
        #expect(TokenRejection(.tokenExpired).errorDescription == "The access token expired")
        #expect(TokenRejection.Reason.tokenMalformed.rawValue == "token_malformed")
        #expect(TokenRejection.Reason(rawValue: "token_revoked") == .tokenRevoked)
    }

    @Test func descriptionsNeverEchoInput() {
        let kid = "kid-\"secret\"\r\nX"
        let token = T.token(header: T.header("ES256", kid: kid), payload: T.claims(["sub": "\"evil\\r\\n\""]), signer: .trusted(.ES256))
        guard case .failure(let rejection) = T.verifier.verify(token, now: T.now) else {
            Issue.record("accepted")
            return
        }
        #expect(!rejection.errorDescription.contains("kid-"))
        #expect(!rejection.description.contains("evil"))
    }
}
