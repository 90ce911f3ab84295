import Crypto
import GatewayJSON
import Testing
import _CryptoExtras

@testable import GatewayTokens

/// Positive controls: every algorithm verifies when properly signed, or the negative tests prove nothing.
@Suite struct PositiveControlTests {
    @Test(arguments: JWSAlgorithm.allCases)
    func okEveryAlgorithm(_ alg: JWSAlgorithm) throws {
        let token = T.ok(alg)
        let verified = try T.verifier.verify(token, now: T.now).get()
        #expect(verified.issuer == T.issuer)
        #expect(verified.subject == "user-123")
        #expect(verified.audiences == [T.audience])
        #expect(verified.scopes == ["read"])
        #expect(verified.expiresAt == T.now + 300)
        #expect(verified.notBefore == T.now - 10)
        #expect(verified.issuedAt == T.now)
        #expect(verified.tokenID == "jti-1")
        #expect(verified.sessionID == "sid-1")
        #expect(verified.claims["client_id"] == .string("client-1"))
    }

    @Test func okThroughRawBufferAPI() throws {
        let token = Array(T.ok(.ES256).utf8)
        let result = token.withUnsafeBytes { T.verifier.verify($0, now: T.now) }
        #expect((try? result.get())?.subject == "user-123")
    }

    @Test func okTypVariants() {
        for typ in ["application/at+jwt", "AT+JWT", "at+JWT", "Application/At+Jwt"] {
            let token = T.token(header: T.header("ES256", kid: "es256-1", typ: typ), payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(token) == "ok", "typ \(typ)")
        }
    }

    @Test func okAudienceArray() {
        let token = T.ok(claims: T.claims(["aud": "[\"https://other.test\",\"https://api.test\"]"]))
        #expect(T.reason(token) == "ok")
        let verified = try? T.verifier.verify(token, now: T.now).get()
        #expect(verified?.audiences == ["https://other.test", "https://api.test"])
    }

    @Test func okFloatExp() throws {
        let token = T.ok(claims: T.claims(["exp": "\(Int(T.now) + 300).5"]))
        let verified = try T.verifier.verify(token, now: T.now).get()
        #expect(verified.expiresAt == T.now + 300.5)
        // Exponent form is a valid JSON number too.
        #expect(T.reason(T.ok(claims: T.claims(["exp": "1.7672259e9"]))) == "ok")
    }

    @Test func okScopesFromScpArray() throws {
        let token = T.ok(claims: T.claims(["scope": nil, "scp": "[\"read\",\"write\"]"]))
        #expect(try T.verifier.verify(token, now: T.now).get().scopes == ["read", "write"])
        // scope wins over scp when both are present; multiple spaces are separators, not empty scopes.
        let both = T.ok(claims: T.claims(["scope": "\" a  b \"", "scp": "[\"x\"]"]))
        #expect(try T.verifier.verify(both, now: T.now).get().scopes == ["a", "b"])
    }

    @Test func okHighSECDSA() throws {
        // s → n − s is mathematically valid (Wycheproof P1363 tcId 1); JOSE has no low-S rule.
        let token = T.ok(.ES256)
        var signature = T.signatureBytes(token)
        let n = hexBytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
        let s = Array(signature[32..<64])
        signature.replaceSubrange(32..<64, with: bigSubtract(n, s))
        let malleated = T.withSignature(token, signature)
        #expect(malleated != token)
        #expect(T.reason(malleated) == "ok")
    }

    @Test func okWithoutAudienceCheckAndWithoutTyp() {
        let verifier = TokenVerifier(issuers: [T.policy(audiences: [], tokenTypes: [])])
        let token = T.token(header: T.header("ES256", kid: "es256-1", typ: nil), payload: T.claims(["aud": nil]), signer: .trusted(.ES256))
        #expect(T.reason(token, verifier: verifier) == "ok")
    }

    @Test func okSingleKeyWithoutKid() {
        let key = try! VerificationKey.publicKeyPEM(TestKeys.p256.publicKey.pemRepresentation, algorithm: .ES256)
        let verifier = TokenVerifier(issuers: [T.policy(keys: [key], algorithms: [.ES256])])
        // The issuer has exactly one key and it has no kid: used whatever the token's kid says.
        #expect(T.reason(T.ok(.ES256), verifier: verifier) == "ok")
        let noKid = T.token(header: T.header("ES256", kid: nil), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(noKid, verifier: verifier) == "ok")
    }

    @Test func okClaimsCarryNestedValues() throws {
        let token = T.ok(claims: T.claims(["roles": "[\"a\",\"b\"]", "profile": "{\"name\":\"Ann\",\"n\":[1,2,{\"x\":null}]}"]))
        let verified = try T.verifier.verify(token, now: T.now).get()
        #expect(verified.claims["roles"] == .array([.string("a"), .string("b")]))
        #expect(verified.claims["profile"]?["name"] == .string("Ann"))
    }
}

/// a − b for equal-length big-endian numbers with a ≥ b.
func bigSubtract(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
    var result = a
    var borrow = 0
    for i in stride(from: a.count - 1, through: 0, by: -1) {
        var v = Int(a[i]) - Int(b[i]) - borrow
        borrow = v < 0 ? 1 : 0
        if v < 0 { v += 256 }
        result[i] = UInt8(v)
    }
    return result
}

func bigAdd(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
    var result = a
    var carry = 0
    for i in stride(from: a.count - 1, through: 0, by: -1) {
        let v = Int(a[i]) + Int(b[i]) + carry
        result[i] = UInt8(v & 0xFF)
        carry = v >> 8
    }
    return result
}

@Suite struct SharedVerifierTests {
    @Test func oneVerifierManyTasks() async {
        // TokenVerifier is an immutable Sendable value: share it across tasks (event loops) without locks.
        let verifier = T.verifier
        let tokens = JWSAlgorithm.allCases.map { T.ok($0) } + [T.ok(.ES256, claims: T.claims(["exp": "1"]))]
        let results = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 {
                group.addTask { tokens.map { T.reason($0, verifier: verifier) } }
            }
            var all: [[String]] = []
            for await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 8)
        for result in results {
            #expect(result == Array(repeating: "ok", count: JWSAlgorithm.allCases.count) + ["token_expired"])
        }
    }
}
