import Crypto
import Foundation
import GatewayJSON
import Testing

@testable import GatewayTokens

/// Attack cases K-* (keys), C-* (crit and header parameters), Y-* (typ), E-* (encoding and structure).
@Suite struct KeySelectionAttackTests {
    @Test func kidInjectionAndUnknownKids() {
        for (kid, secret) in [
            ("../../../../../../dev/null", [UInt8]()),
            ("/dev/null", [UInt8(0)]),
            ("x' UNION SELECT 'secret'-- ", Array("secret".utf8)),
            ("does-not-exist", TestKeys.hs256Secret),
            ("", TestKeys.hs256Secret),
            ("HS256-1", TestKeys.hs256Secret),  // kids are case-sensitive
        ] {
            let token = T.token(header: T.header("HS256", kid: kid), payload: T.claims(), signer: .hmac(.HS256, secret))
            #expect(T.reason(token) == "key_unknown", "kid \(kid)")
        }
        // K-kid-crlf: valid ES256 signature, kid with CR LF and a quote.
        let crlf = T.token(
            header: "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"es256-1\\r\\nX-Injected: 1\\\"\"}", payload: T.claims(),
            signer: .trusted(.ES256))
        #expect(T.reason(crlf) == "key_unknown")
        // K-kid-int and other non-string kids.
        for kid in ["123", "null", "[\"es256-1\"]", "{\"k\":1}", "true"] {
            let token = T.token(
                header: "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\(kid)}", payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(token) == "token_malformed", "kid \(kid)")
        }
        // K-kid-huge: bounded by the token size; never accepted.
        let huge = T.token(
            header: T.header("ES256", kid: String(repeating: "k", count: 6000)), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(huge) == "token_malformed")
        let big = T.token(
            header: T.header("ES256", kid: String(repeating: "k", count: 3000)), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(big) == "key_unknown")
    }

    @Test func noKidWithSeveralKeysIsUnknown() {
        let token = T.token(header: T.header("ES256", kid: nil), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(token) == "key_unknown")
    }

    @Test func duplicateKidInConfiguredKeysIsUnusable() throws {
        let a = try VerificationKey.publicKeyPEM(TestKeys.p256.publicKey.pemRepresentation, algorithm: .ES256, kid: "dup")
        let b = try VerificationKey.publicKeyPEM(TestKeys.p256Other.publicKey.pemRepresentation, algorithm: .ES256, kid: "dup")
        let verifier = TokenVerifier(issuers: [T.policy(keys: [a, b])])
        let token = T.token(header: T.header("ES256", kid: "dup"), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(token, verifier: verifier) == "key_unknown")
    }

    @Test func keysBelongToTheirIssuer() throws {
        // K-wrong-issuer-same-kid: issuer 2 reuses kid "es256-1" with its own key.
        let issuer2Key = try VerificationKey.publicKeyPEM(TestKeys.p256Other.publicKey.pemRepresentation, algorithm: .ES256, kid: "es256-1")
        let issuer2 = IssuerPolicy(issuer: "https://issuer2.test", keys: [issuer2Key], algorithms: [.ES256], audiences: [T.audience])
        let verifier = TokenVerifier(issuers: [T.policy(), issuer2])
        // iss = issuer 1, signed by issuer 2's key → issuer 1's es256-1 is used → bad signature.
        let crossed = T.token(header: T.header(.ES256), payload: T.claims(), signer: .p256(TestKeys.p256Other))
        #expect(T.reason(crossed, verifier: verifier) == "signature_invalid")
        // iss = issuer 2, properly signed by its key → ok; signed by issuer 1's key → bad signature.
        let own = T.token(
            header: T.header(.ES256), payload: T.claims(["iss": "\"https://issuer2.test\""]), signer: .p256(TestKeys.p256Other))
        #expect(T.reason(own, verifier: verifier) == "ok")
        let other = T.token(header: T.header(.ES256), payload: T.claims(["iss": "\"https://issuer2.test\""]), signer: .trusted(.ES256))
        #expect(T.reason(other, verifier: verifier) == "signature_invalid")
        // Without issuer 2 configured: unknown issuer.
        #expect(T.reason(own) == "issuer_unknown")
    }

    @Test func embeddedAndReferencedKeysAreRefused() throws {
        let attacker = P256.Signing.PrivateKey()
        let x963 = Array(attacker.publicKey.x963Representation)
        let jwk = "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"\(b64u(x963[1..<33]))\",\"y\":\"\(b64u(x963[33..<65]))\"}"
        for extra in [
            "\"jwk\":\(jwk)",
            "\"jku\":\"https://attacker.test/jwks.json\"",
            "\"x5u\":\"http://169.254.169.254/latest/meta-data/\"",
            "\"x5c\":[\"MIIBszCCAVmgAwIBAgIUXXX=\"]",
        ] {
            let token = T.token(header: T.header(.ES256, extra: extra), payload: T.claims(), signer: .p256(attacker))
            #expect(T.reason(token) == "token_malformed", "\(extra)")
            // Even when the signature is by the trusted key.
            let trusted = T.token(header: T.header(.ES256, extra: extra), payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(trusted) == "token_malformed", "\(extra)")
        }
        // K-unprotected-alg: JSON serialisation is never accepted.
        let compact = T.ok(.HS256).split(separator: ".")
        let json =
            "{\"protected\":\"\(compact[0])\",\"header\":{\"alg\":\"HS256\"},\"payload\":\"\(compact[1])\",\"signature\":\"\(compact[2])\"}"
        #expect(T.reason(json) == "token_malformed")
    }
}

@Suite struct CriticalHeaderTests {
    @Test func critB64ZipAreRefused() {
        for extra in [
            "\"crit\":[\"x-policy\"],\"x-policy\":\"mfa\"",
            "\"crit\":[]",
            "\"crit\":[\"exp\"]",
            "\"crit\":[\"x-foo\"]",
            "\"crit\":\"b64\"",
            "\"b64\":false,\"crit\":[\"b64\"]",
            "\"b64\":false",
            "\"b64\":true",
            "\"zip\":\"DEF\"",
            "\"enc\":\"A256GCM\"",
        ] {
            let token = T.ok(.HS256, headerExtra: extra)
            #expect(T.reason(token) == "token_malformed", "\(extra)")
        }
    }

    @Test func b64FalseDetached() {
        // C-b64-false-detached: hdr..sig with the MAC over hdr + "." + raw JSON.
        let header = b64u("{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"hs256-1\",\"b64\":false,\"crit\":[\"b64\"]}")
        let payload = T.claims()
        let mac = TestSigner.trusted(.HS256).sign(Array((header + "." + payload).utf8))
        #expect(T.reason(header + ".." + b64u(mac)) == "token_malformed")
        #expect(T.reason(header + "." + payload + "." + b64u(mac)) == "token_malformed")
    }
}

@Suite struct TokenTypeTests {
    @Test func typPolicy() {
        for (typ, expected) in [
            (nil, "token_type_invalid"), ("JWT", "token_type_invalid"), ("rt+jwt", "token_type_invalid"),
            ("dpop+jwt", "token_type_invalid"), ("at+jwt ", "token_type_invalid"), ("", "token_type_invalid"),
            ("application/jwt", "token_type_invalid"), ("at+jwt;v=1", "token_type_invalid"),
        ] as [(String?, String)] {
            let token = T.token(header: T.header("ES256", kid: "es256-1", typ: typ), payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(token) == expected, "typ \(typ ?? "<none>")")
        }
        for typ in ["1", "null", "[\"at+jwt\"]"] {
            let token = T.token(
                header: "{\"alg\":\"ES256\",\"kid\":\"es256-1\",\"typ\":\(typ)}", payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(token) == "token_malformed", "typ \(typ)")
        }
        // A per-issuer list accepts legacy "JWT" (case-insensitively).
        let legacy = TokenVerifier(issuers: [T.policy(tokenTypes: ["at+jwt", "JWT"])])
        let jwt = T.token(header: T.header("ES256", kid: "es256-1", typ: "jwt"), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(jwt, verifier: legacy) == "ok")
    }

    @Test func idTokenAudienceIsRefused() {
        // Y-idtoken-aud / Y-typ-jwt.
        #expect(T.reason(T.ok(claims: T.claims(["aud": "\"client-1\"", "nonce": "\"n\""]))) == "audience_mismatch")
    }

    @Test func jweShapesAreRefusedBeforeAnyCrypto() {
        // Y-jwe-substitution / E-jwe-5.
        let jwe = b64u("{\"alg\":\"RSA-OAEP\",\"enc\":\"A256GCM\",\"kid\":\"rs256-1\"}") + ".AAAA.AAAA.AAAA.AAAA"
        #expect(T.reason(jwe) == "token_malformed")
        let three = b64u("{\"alg\":\"RSA-OAEP\",\"enc\":\"A256GCM\",\"kid\":\"rs256-1\"}") + ".AAAA.AAAA"
        #expect(T.reason(three) != "ok")
    }
}

@Suite struct EncodingAndJSONTests {
    func parts(_ token: String) -> [String] { token.split(separator: ".", omittingEmptySubsequences: false).map(String.init) }

    @Test func paddingAlphabetAndStrayBits() throws {
        let token = T.ok(.ES256)
        let p = parts(token)
        #expect(T.reason(token) == "ok")
        // E-pad-*: '=' anywhere.
        for variant in [
            p[0] + "=." + p[1] + "." + p[2], p[0] + "." + p[1] + "." + p[2] + "=", p[0] + "." + p[1] + "." + p[2] + "==",
            p[0] + "." + p[1] + "=." + p[2],
        ] {
            #expect(T.reason(variant) == "token_malformed")
        }
        // E-std-alphabet: find a token whose signature uses '-' or '_' and re-encode with '+' '/'.
        var tested = 0
        for _ in 0..<64 where tested == 0 {
            let candidate = T.ok(.ES256)
            let sig = parts(candidate)[2]
            guard sig.contains("-") || sig.contains("_") else { continue }
            let standard = sig.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            let q = parts(candidate)
            #expect(T.reason(q[0] + "." + q[1] + "." + standard) == "token_malformed")
            tested += 1
        }
        #expect(tested == 1)
        // E-noncanonical-bits: the ES256 signature is 86 characters, so its last character has 4 unused bits.
        let sig = Array(p[2].utf8)
        #expect(sig.count == 86)
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let lastValue = table.firstIndex(of: sig[85])!
        #expect(lastValue & 0x0F == 0)
        for bit in 0..<4 {
            var mutated = sig
            mutated[85] = table[lastValue | (1 << bit)]
            #expect(T.reason(p[0] + "." + p[1] + "." + String(decoding: mutated, as: UTF8.self)) == "token_malformed", "bit \(bit)")
        }
        // Length mod 4 == 1 is impossible.
        #expect(T.reason(p[0] + "." + p[1] + "." + p[2] + "AAA") == "token_malformed")
        #expect(T.reason(p[0] + "A." + p[1] + "." + p[2]) != "ok")
    }

    @Test func segmentStructure() {
        let p = parts(T.ok(.ES256))
        let (h, q, s) = (p[0], p[1], p[2])
        var variants: [String] = []
        variants.append(h + "." + q)  // E-two-parts
        variants.append(h + "." + q + "." + s + ".xyz")  // E-four-parts
        variants.append(h + "." + q + "." + s + ".")  // E-trailing-dot
        variants.append(h + ".." + q + "." + s)  // E-double-dot
        variants.append("." + q + "." + s)  // empty header
        variants.append(h + ".." + s)  // empty payload
        variants.append(h + ". " + q + "." + s)  // E-space-inside
        variants.append(h + "." + q + "." + s + " ")
        variants.append(" " + h + "." + q + "." + s)
        variants.append(h + "." + q + "\n." + s)
        variants.append(h + "." + q + "." + String(s.prefix(10)) + "?" + String(s.dropFirst(10)))
        variants.append(h + "." + q + "." + String(s.prefix(10)) + "#" + String(s.dropFirst(10)))
        variants += ["", ".", "..", "..."]  // E-empty
        for variant in variants {
            #expect(T.reason(variant) == "token_malformed", "\(variant.prefix(40))")
        }
        // E-many-dots, both under and over the size limit.
        #expect(T.reason(String(repeating: ".", count: 100_000)) == "token_malformed")
        let roomy = TokenVerifier(issuers: [T.policy()], maxTokenBytes: 1 << 20)
        #expect(T.reason(String(repeating: ".", count: 100_000), verifier: roomy) == "token_malformed")
        #expect(T.reason(String(repeating: "A", count: 8000) + "." + String(repeating: ".", count: 100)) == "token_malformed")
    }

    @Test func nonObjectAndNonUTF8JSON() {
        let signer = TestSigner.trusted(.ES256)
        // E-header-array, E-payload-text, and other non-object values.
        for header in ["[\"ES256\"]", "\"ES256\"", "null", "1", ""] {
            #expect(T.reason(T.token(header: header, payload: T.claims(), signer: signer)) == "token_malformed", "\(header)")
        }
        for payload in ["Payload", "[]", "null", "\"x\"", "42", "{", "{}}", " "] {
            #expect(T.reason(T.token(header: T.header(.ES256), payload: payload, signer: signer)) == "token_malformed", "\(payload)")
        }
        // E-header-bom.
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        #expect(
            T.reason(T.token(headerBytes: bom + Array(T.header(.ES256).utf8), payloadBytes: Array(T.claims().utf8), signer: signer))
                == "token_malformed")
        #expect(
            T.reason(T.token(headerBytes: Array(T.header(.ES256).utf8), payloadBytes: bom + Array(T.claims().utf8), signer: signer))
                == "token_malformed")
        // E-header-utf16.
        let utf16 = Array(T.header(.ES256).utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        #expect(T.reason(T.token(headerBytes: utf16, payloadBytes: Array(T.claims().utf8), signer: signer)) == "token_malformed")
        // E-invalid-utf8: sub contains 0xFF; also an overlong encoding and a lone surrogate escape.
        var payload = Array(T.claims().utf8)
        let at = payload.firstIndex(of: UInt8(ascii: "1"))!  // inside "user-123"
        payload[at] = 0xFF
        #expect(T.reason(T.token(headerBytes: Array(T.header(.ES256).utf8), payloadBytes: payload, signer: signer)) == "token_malformed")
        let overlong = Array("{\"iss\":\"https://issuer.test\",\"sub\":\"".utf8) + [0xC0, 0xAF] + Array("\"}".utf8)
        #expect(T.reason(T.token(headerBytes: Array(T.header(.ES256).utf8), payloadBytes: overlong, signer: signer)) == "token_malformed")
        #expect(T.reason(T.ok(claims: T.claims(["sub": "\"\\ud800\""]))) == "token_malformed")
    }

    @Test func lenientJSONIsRefused() {
        let signer = TestSigner.trusted(.ES256)
        for header in [
            "{\"alg\":\"ES256\",/*x*/\"typ\":\"at+jwt\",\"kid\":\"es256-1\"}",  // E-json-comments
            "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"es256-1\",}",  // trailing comma
            "{'alg':'ES256','typ':'at+jwt','kid':'es256-1'}",  // single quotes
            "{alg:\"ES256\"}",
            "{\"alg\":\"none\",\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"es256-1\"}",  // E-dup-alg
            "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"es256-1\",\"kid\":\"es256-1\"}",
        ] {
            #expect(T.reason(T.token(header: header, payload: T.claims(), signer: signer)) == "token_malformed", "\(header)")
        }
        // E-dup-sub, E-nan, exotic numbers that are not JSON.
        for payload in [
            T.claims(extra: "\"sub\":\"admin\""),
            T.claims(["exp": "NaN"]), T.claims(["exp": "Infinity"]), T.claims(["exp": "-Infinity"]),
            T.claims(["exp": "01767225900"]), T.claims(["exp": "1e3000"]), T.claims(["exp": "+1767225900"]),
            T.claims(["exp": "0x69"]), T.claims(["exp": "1767225900."]), T.claims(["exp": ".5"]),
        ] {
            #expect(T.reason(T.token(header: T.header(.ES256), payload: payload, signer: signer)) == "token_malformed", "\(payload)")
        }
        // Insignificant JSON whitespace is fine (Wycheproof tcId 377).
        let spaced = T.token(
            header: "{ \"alg\" : \"ES256\",\n\t\"typ\":\"at+jwt\" , \"kid\":\"es256-1\" }", payload: T.claims(), signer: signer)
        #expect(T.reason(spaced) == "ok")
    }

    @Test func depthAndSize() {
        let signer = TestSigner.trusted(.ES256)
        // E-deep-nesting: 33 levels in the payload (limit 32; the claim set itself is level 1, so 31 nested arrays fit).
        let deep = T.claims(["x": String(repeating: "[", count: 32) + String(repeating: "]", count: 32)])
        #expect(T.reason(T.token(header: T.header(.ES256), payload: deep, signer: signer)) == "token_malformed")
        let ok = T.claims(["x": String(repeating: "[", count: 31) + String(repeating: "]", count: 31)])
        #expect(T.reason(T.token(header: T.header(.ES256), payload: ok, signer: signer)) == "ok")
        let veryDeep = T.claims(["x": String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)])
        #expect(T.reason(T.token(header: T.header(.ES256), payload: veryDeep, signer: signer)) == "token_malformed")
        let roomy = TokenVerifier(issuers: [T.policy()], maxTokenBytes: 1 << 20)
        #expect(T.reason(T.token(header: T.header(.ES256), payload: veryDeep, signer: signer), verifier: roomy) == "token_malformed")
        // Deep header.
        let deepHeader = T.header(.ES256, extra: "\"x\":" + String(repeating: "[", count: 40) + String(repeating: "]", count: 40))
        #expect(T.reason(T.token(header: deepHeader, payload: T.claims(), signer: signer)) == "token_malformed")
        // E-huge-claims: over 8 KiB in total is refused; just under is fine.
        let huge = T.claims(["name": "\"" + String(repeating: "a", count: 7000) + "\""])
        #expect(T.reason(T.token(header: T.header(.ES256), payload: huge, signer: signer)) == "token_malformed")
        let wide = T.claims(extra: (0..<1000).map { "\"c\($0)\":1" }.joined(separator: ","))
        #expect(T.reason(T.token(header: T.header(.ES256), payload: wide, signer: signer)) == "token_malformed")
        let fits = T.claims(["name": "\"" + String(repeating: "a", count: 5000) + "\""])
        let fitsToken = T.token(header: T.header(.ES256), payload: fits, signer: signer)
        #expect(fitsToken.utf8.count <= 8192)
        #expect(T.reason(fitsToken) == "ok")
        // The limit is configurable.
        let tight = TokenVerifier(issuers: [T.policy()], maxTokenBytes: 200)
        #expect(T.reason(T.ok(.ES256), verifier: tight) == "token_malformed")
    }

    @Test func fuzzNeverCrashesOrAccepts() {
        // SW-fuzz (small, deterministic): random bytes, random base64url segments, and single-byte mutations of
        // valid tokens. Nothing crashes; nothing but the untouched token verifies.
        var rng = SplitMix64(seed: 0x5EED)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \u{0}\u{FF}".utf8)
        for _ in 0..<2000 {
            let length = Int(rng.next() % 300)
            let bytes = (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            let result = bytes.withUnsafeBytes { T.verifier.verify($0, now: T.now) }
            #expect((try? result.get()) == nil)
        }
        for alg in [JWSAlgorithm.ES256, .HS256, .EdDSA, .RS256] {
            let token = Array(T.ok(alg).utf8)
            for _ in 0..<300 {
                var mutated = token
                let index = Int(rng.next() % UInt64(token.count))
                mutated[index] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                let result = mutated.withUnsafeBytes { T.verifier.verify($0, now: T.now) }
                if mutated != token { #expect((try? result.get()) == nil, "\(alg) mutation at \(index)") }
            }
        }
    }
}

struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
