import Crypto
import Foundation
import GatewayJSON
import Testing
import _CryptoExtras

@testable import GatewayTokens

/// PEM, certificate and HMAC loading (attack cases W-pem-formats, W-hmac-config, S-rsa-weak1024).
@Suite struct PEMLoadingTests {
    @Test func eachKeyTypeLoadsForItsAlgorithm() throws {
        for alg in [JWSAlgorithm.RS256, .RS384, .RS512, .PS256, .PS384, .PS512] {
            let key = try VerificationKey.publicKeyPEM(TestKeys.rsaPublicPEM(), algorithm: alg, kid: "k")
            #expect(key.algorithm == alg && key.kid == "k" && key.thumbprint != nil)
        }
        #expect(try VerificationKey.publicKeyPEM(TestKeys.p256.publicKey.pemRepresentation, algorithm: .ES256).algorithm == .ES256)
        #expect(try VerificationKey.publicKeyPEM(TestKeys.p384.publicKey.pemRepresentation, algorithm: .ES384).algorithm == .ES384)
        #expect(try VerificationKey.publicKeyPEM(TestKeys.ed25519PEM(TestKeys.ed25519.publicKey), algorithm: .EdDSA).algorithm == .EdDSA)
        #expect(try VerificationKey.publicKeyPEM(PEMFixtures.edPublicKey, algorithm: .EdDSA).kid == nil)
    }

    @Test func certificatesYieldTheirSubjectKey() throws {
        for (certificate, spki, alg) in [
            (PEMFixtures.ecCertificate, PEMFixtures.ecPublicKey, JWSAlgorithm.ES256),
            (PEMFixtures.ec384Certificate, PEMFixtures.ec384PublicKey, .ES384),
            (PEMFixtures.edCertificate, PEMFixtures.edPublicKey, .EdDSA),
            (PEMFixtures.rsaCertificate, PEMFixtures.rsaPublicKey, .RS256),
        ] {
            let fromCertificate = try VerificationKey.publicKeyPEM(certificate, algorithm: alg)
            let fromSPKI = try VerificationKey.publicKeyPEM(spki, algorithm: alg)
            #expect(fromCertificate.thumbprint == fromSPKI.thumbprint, "\(alg)")
            #expect(fromCertificate.thumbprint != nil)
        }
        // A token signed by the certificate's private key verifies through the certificate-loaded key.
        let privateKey = try P256.Signing.PrivateKey(pemRepresentation: PEMFixtures.ecPrivateKey)
        let key = try VerificationKey.publicKeyPEM(PEMFixtures.ecCertificate, algorithm: .ES256, kid: "cert-1")
        let verifier = TokenVerifier(issuers: [T.policy(keys: [key], algorithms: [.ES256])])
        let token = T.token(header: T.header("ES256", kid: "cert-1"), payload: T.claims(), signer: .p256(privateKey))
        #expect(T.reason(token, verifier: verifier) == "ok")
        // Certificate with CRLF line endings.
        let crlf = PEMFixtures.ecCertificate.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(try VerificationKey.publicKeyPEM(crlf, algorithm: .ES256).thumbprint == key.thumbprint)
    }

    @Test func wrongKeyTypeForAlgorithmIsRefused() {
        let cases: [(String, JWSAlgorithm)] = [
            (TestKeys.rsaPublicPEM(), .ES256), (TestKeys.rsaPublicPEM(), .EdDSA), (TestKeys.rsaPublicPEM(), .HS256),
            (TestKeys.p256.publicKey.pemRepresentation, .ES384), (TestKeys.p256.publicKey.pemRepresentation, .RS256),
            (TestKeys.p256.publicKey.pemRepresentation, .HS256), (TestKeys.p384.publicKey.pemRepresentation, .ES256),
            (TestKeys.ed25519PEM(TestKeys.ed25519.publicKey), .ES256), (PEMFixtures.rsaCertificate, .ES256),
            (PEMFixtures.ecCertificate, .EdDSA),
        ]
        for (pem, alg) in cases {
            #expect(throws: KeyLoadError.self, "\(alg)") { try VerificationKey.publicKeyPEM(pem, algorithm: alg) }
            do {
                _ = try VerificationKey.publicKeyPEM(pem, algorithm: alg)
            } catch {
                #expect(error.code == "key_algorithm_mismatch", "\(alg): \(error)")
            }
        }
    }

    @Test func malformedAndUnsupportedPEMs() throws {
        let spki = TestKeys.p256.publicKey.pemRepresentation
        func code(_ pem: String, _ alg: JWSAlgorithm = .ES256) -> String? {
            do {
                _ = try VerificationKey.publicKeyPEM(pem, algorithm: alg)
                return nil
            } catch {
                return error.code
            }
        }
        #expect(code(TestKeys.p256.pemRepresentation) == "key_private")  // BEGIN EC PRIVATE KEY
        #expect(code(TestKeys.p256.derRepresentation.base64EncodedString()) == "key_invalid")
        #expect(code(TestKeys.rsa.pemRepresentation, .RS256) == "key_private")
        #expect(code(PEMFixtures.ecPrivateKey) == "key_private")  // BEGIN PRIVATE KEY (PKCS#8)
        #expect(code(TestKeys.rsa.publicKey.pkcs1PEMRepresentation, .RS256) == "key_unsupported")
        #expect(code(spki + spki) == "key_invalid")  // two concatenated PEMs
        #expect(code(spki + "trailing garbage") == "key_invalid")
        #expect(code("garbage\n" + spki) == "key_invalid")
        #expect(code("") == "key_invalid")
        #expect(code("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n") == "key_invalid")
        #expect(code("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n") == "key_invalid")
        #expect(code(spki.replacingOccurrences(of: "END PUBLIC KEY", with: "END CERTIFICATE")) == "key_invalid")
        #expect(code("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n") == "key_invalid")
        // Truncated DER inside a well-formed PEM.
        let der = Array(TestKeys.p256.publicKey.derRepresentation)
        let truncated = "-----BEGIN PUBLIC KEY-----\n\(Base64Standard.encode(der.dropLast(3)))\n-----END PUBLIC KEY-----\n"
        #expect(code(truncated) == "key_invalid")
        // Leading/trailing whitespace is fine.
        #expect(code("\n  " + spki + "\n\n") == nil)
    }

    @Test func weakRSAIsRefused() throws {
        let weak = try _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024))
        do {
            _ = try VerificationKey.publicKeyPEM(weak.publicKey.pemRepresentation, algorithm: .RS256)
            Issue.record("1024-bit RSA accepted")
        } catch {
            #expect(error.code == "key_weak")
        }
    }

    @Test func hmacSecretLengths() throws {
        for (alg, minimum) in [(JWSAlgorithm.HS256, 32), (.HS384, 48), (.HS512, 64)] {
            #expect(try VerificationKey.hmac(secret: [UInt8](repeating: 7, count: minimum), algorithm: alg).algorithm == alg)
            let short = Array("supersecret-passphrase-XYZ".utf8)
            for secret in [[UInt8](), [0], [UInt8](repeating: 7, count: minimum - 1), short] {
                do {
                    _ = try VerificationKey.hmac(secret: secret, algorithm: alg)
                    Issue.record("\(alg): \(secret.count)-byte secret accepted")
                } catch {
                    #expect(error.code == "key_weak")
                    #expect(!error.message.contains("supersecret") && !error.description.contains("supersecret"))
                }
            }
        }
        for alg in JWSAlgorithm.allCases where !alg.isSymmetric {
            #expect(throws: KeyLoadError.self) { try VerificationKey.hmac(secret: TestKeys.hs512Secret, algorithm: alg) }
        }
        // HMAC keys publish no thumbprint.
        #expect(try VerificationKey.hmac(secret: TestKeys.hs256Secret, algorithm: .HS256).thumbprint == nil)
    }

    @Test func rfc7638Thumbprint() throws {
        // RFC 7638 §3.1 example.
        let n =
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        let document = "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"\(n)\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}]}"
        let result = try VerificationKey.jwks(Array(document.utf8), allowedAlgorithms: [.RS256])
        #expect(result.keys.first?.thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        // Same key via PEM gives the same thumbprint (it does not depend on the source format).
        let pem = try VerificationKey.publicKeyPEM(TestKeys.rsaPublicPEM(), algorithm: .RS256)
        let primitives = try TestKeys.rsa.publicKey.getKeyPrimitives()
        let jwk =
            "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"\(b64u(Array(primitives.modulus)))\",\"e\":\"\(b64u(Array(primitives.publicExponent)))\"}]}"
        #expect(try VerificationKey.jwks(Array(jwk.utf8), allowedAlgorithms: [.RS256]).keys.first?.thumbprint == pem.thumbprint)
    }
}

@Suite struct JWKSLoadingTests {
    static func ecJWK(_ key: P256.Signing.PublicKey, kid: String, extra: String = "") -> String {
        let point = Array(key.x963Representation)
        return
            "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"\(kid)\",\"x\":\"\(b64u(point[1..<33]))\",\"y\":\"\(b64u(point[33..<65]))\"\(extra)}"
    }

    static func rsaJWK(_ key: _RSA.Signing.PublicKey, kid: String, extra: String = "", e: String? = nil) -> String {
        let primitives = try! key.getKeyPrimitives()
        return
            "{\"kty\":\"RSA\",\"kid\":\"\(kid)\",\"n\":\"\(b64u(Array(primitives.modulus)))\",\"e\":\"\(e ?? b64u(Array(primitives.publicExponent)))\"\(extra)}"
    }

    static func okpJWK(_ raw: [UInt8], kid: String) -> String {
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"\(kid)\",\"x\":\"\(b64u(raw))\"}"
    }

    static func load(_ entries: [String], allowed: Set<JWSAlgorithm> = Set(JWSAlgorithm.allCases)) throws -> JWKSLoadResult {
        try VerificationKey.jwks(Array("{\"keys\":[\(entries.joined(separator: ","))]}".utf8), allowedAlgorithms: allowed)
    }

    @Test func mixedGoodAndBadKeys() throws {
        let weak = try _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024))
        var badPoint = Array(TestKeys.p256Other.publicKey.x963Representation)
        badPoint[64] ^= 1
        let offCurve =
            "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"bad-point\",\"x\":\"\(b64u(badPoint[1..<33]))\",\"y\":\"\(b64u(badPoint[33..<65]))\"}"
        var identity = [UInt8](repeating: 0, count: 32)
        identity[0] = 1
        var yTwo = [UInt8](repeating: 0, count: 32)
        yTwo[0] = 2
        let entries = [
            Self.ecJWK(TestKeys.p256.publicKey, kid: "good-ec", extra: ",\"alg\":\"ES256\",\"use\":\"sig\""),
            offCurve,
            Self.rsaJWK(weak.publicKey, kid: "rsa-1024", extra: ",\"alg\":\"RS256\""),  // S-rsa-weak1024
            Self.rsaJWK(TestKeys.rsaOther.publicKey, kid: "rsa-enc", extra: ",\"use\":\"enc\",\"alg\":\"RS256\""),  // W-use-enc
            Self.rsaJWK(TestKeys.rsaOther.publicKey, kid: "rsa-ops", extra: ",\"key_ops\":[\"encrypt\"],\"alg\":\"RS256\""),
            Self.rsaJWK(TestKeys.rsaOther.publicKey, kid: "rsa-e1", extra: ",\"alg\":\"RS256\"", e: "AQ"),  // S-rsa-e1
            Self.rsaJWK(TestKeys.rsaOther.publicKey, kid: "rsa-e2", extra: ",\"alg\":\"RS256\"", e: "Ag"),
            Self.rsaJWK(TestKeys.rsaOther.publicKey, kid: "rsa-priv", extra: ",\"alg\":\"RS256\",\"d\":\"AQAB\""),
            "{\"kty\":\"foo\",\"kid\":\"unknown-kty\"}",
            "{\"kid\":\"no-kty\",\"x\":\"AA\"}",
            "42",
            "{\"kty\":\"RSA\",\"kid\":\"no-n\",\"e\":\"AQAB\",\"alg\":\"RS256\"}",
            "{\"kty\":\"EC\",\"crv\":\"P-521\",\"kid\":\"p521\",\"x\":\"AA\",\"y\":\"AA\"}",
            Self.ecJWK(TestKeys.p256Other.publicKey, kid: "wrong-curve", extra: ",\"alg\":\"ES384\""),  // W-wrong-curve
            Self.ecJWK(TestKeys.p256Other.publicKey, kid: "es521", extra: ",\"alg\":\"ES521\""),
            Self.ecJWK(TestKeys.p256Other.publicKey, kid: "bad-kid-type").replacingOccurrences(of: "\"bad-kid-type\"", with: "7"),
            Self.okpJWK(identity, kid: "ed-identity"),  // S-ed-small-order-key
            Self.okpJWK(yTwo, kid: "ed-off-curve"),
            Self.okpJWK(Array(TestKeys.ed25519.publicKey.rawRepresentation), kid: "good-ed"),
            Self.rsaJWK(TestKeys.rsa.publicKey, kid: "good-rsa", extra: ",\"alg\":\"RS256\""),
            Self.rsaJWK(TestKeys.rsa.publicKey, kid: "good-rsa-noalg"),
        ]
        let result = try Self.load(entries, allowed: [.RS256, .ES256, .EdDSA])
        #expect(Set(result.keys.compactMap(\.kid)) == ["good-ec", "good-ed", "good-rsa", "good-rsa-noalg"])
        #expect(result.keys.first { $0.kid == "good-rsa-noalg" }?.algorithm == .RS256)
        #expect(result.skipped.count == entries.count - 4)
        #expect(result.skipped.allSatisfy { !$0.reason.isEmpty })
        // The loaded keys work.
        let verifier = TokenVerifier(issuers: [T.policy(keys: result.keys)])
        let token = T.token(header: T.header("ES256", kid: "good-ec"), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(token, verifier: verifier) == "ok")
        let rsaToken = T.token(header: T.header("RS256", kid: "good-rsa-noalg"), payload: T.claims(), signer: .trusted(.RS256))
        #expect(T.reason(rsaToken, verifier: verifier) == "ok")
        let edToken = T.token(header: T.header("EdDSA", kid: "good-ed"), payload: T.claims(), signer: .trusted(.EdDSA))
        #expect(T.reason(edToken, verifier: verifier) == "ok")
    }

    @Test func ed25519SmallOrderAndNonCanonicalKeysAreSkipped() throws {
        var encodings: [[UInt8]] = []
        var zero = [UInt8](repeating: 0, count: 32)
        encodings.append(zero)  // y = 0 (order 4)
        zero[0] = 1
        encodings.append(zero)  // identity
        var minusOne = [UInt8](repeating: 0xFF, count: 32)
        minusOne[0] = 0xEC
        minusOne[31] = 0x7F
        encodings.append(minusOne)  // order 2
        encodings.append(hexBytes("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"))  // order 8
        encodings.append(hexBytes("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))  // order 8
        var withSign = hexBytes("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
        withSign[31] |= 0x80
        encodings.append(withSign)
        var p = minusOne
        p[0] = 0xED
        encodings.append(p)  // y = p: non-canonical 0
        var pPlusOne = minusOne
        pPlusOne[0] = 0xEE
        encodings.append(pPlusOne)  // y = p + 1: non-canonical 1
        var negativeZeroX = zero
        negativeZeroX[31] |= 0x80  // identity with sign bit: x = 0 cannot be negative
        encodings.append(negativeZeroX)
        encodings.append([UInt8](repeating: 0, count: 31))  // wrong length
        for (i, raw) in encodings.enumerated() {
            let result = try Self.load([Self.okpJWK(raw, kid: "k\(i)")])
            #expect(result.keys.isEmpty, "encoding \(i)")
            #expect(result.skipped.count == 1)
            let pem =
                "-----BEGIN PUBLIC KEY-----\n\(Base64Standard.encode([0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00] + raw))\n-----END PUBLIC KEY-----\n"
            #expect(throws: KeyLoadError.self) { try VerificationKey.publicKeyPEM(pem, algorithm: .EdDSA) }
        }
        // Many random valid keys pass the point check.
        for _ in 0..<50 {
            let raw = Array(Curve25519.Signing.PrivateKey().publicKey.rawRepresentation)
            #expect(try Self.load([Self.okpJWK(raw, kid: "r")]).keys.count == 1)
        }
    }

    @Test func algorithmPinningWithoutAlg() throws {
        let rsa = Self.rsaJWK(TestKeys.rsa.publicKey, kid: "r")
        #expect(try Self.load([rsa], allowed: [.RS256, .ES256]).keys.map(\.algorithm) == [.RS256])
        let ambiguous = try Self.load([rsa], allowed: [.RS256, .PS256])
        #expect(ambiguous.keys.isEmpty && ambiguous.skipped.count == 1)
        #expect(ambiguous.skipped.first?.kid == "r")
        #expect(try Self.load([rsa], allowed: [.ES256]).keys.isEmpty)
        // With alg: only if allowed, and only if it fits.
        let withAlg = Self.rsaJWK(TestKeys.rsa.publicKey, kid: "r", extra: ",\"alg\":\"PS256\"")
        #expect(try Self.load([withAlg], allowed: [.RS256, .PS256]).keys.map(\.algorithm) == [.PS256])
        #expect(try Self.load([withAlg], allowed: [.RS256]).keys.isEmpty)
        #expect(try Self.load([Self.rsaJWK(TestKeys.rsa.publicKey, kid: "r", extra: ",\"alg\":\"ES256\"")]).keys.isEmpty)
        #expect(try Self.load([Self.rsaJWK(TestKeys.rsa.publicKey, kid: "r", extra: ",\"alg\":\"none\"")]).keys.isEmpty)
        #expect(try Self.load([Self.rsaJWK(TestKeys.rsa.publicKey, kid: "r", extra: ",\"alg\":\"rs256\"")]).keys.isEmpty)
    }

    @Test func octKeys() throws {
        let oct = "{\"kty\":\"oct\",\"kid\":\"h\",\"alg\":\"HS256\",\"k\":\"\(b64u(TestKeys.hs256Secret))\"}"
        #expect(try Self.load([oct], allowed: [.ES256, .RS256]).keys.isEmpty)  // no HS* allowed
        #expect(try Self.load([oct], allowed: [.HS256]).keys.map(\.algorithm) == [.HS256])
        let noAlg = "{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"\(b64u(TestKeys.hs512Secret))\"}"
        #expect(try Self.load([noAlg], allowed: [.HS256, .HS384]).keys.isEmpty)  // ambiguous
        #expect(try Self.load([noAlg], allowed: [.HS512, .ES256]).keys.map(\.algorithm) == [.HS512])
        // Short oct key for its alg.
        let short = "{\"kty\":\"oct\",\"kid\":\"h\",\"alg\":\"HS384\",\"k\":\"\(b64u(TestKeys.hs256Secret))\"}"
        #expect(try Self.load([short], allowed: [.HS384]).keys.isEmpty)
        // W-mixed-symmetry: oct keys next to asymmetric keys are skipped; the asymmetric ones stay.
        let mixed = try Self.load([oct, Self.ecJWK(TestKeys.p256.publicKey, kid: "e")], allowed: [.HS256, .ES256])
        #expect(mixed.keys.compactMap(\.kid) == ["e"])
        #expect(mixed.skipped.map(\.kid) == ["h"])
        // Loaded HMAC key verifies.
        let verifier = TokenVerifier(issuers: [T.policy(keys: try Self.load([oct], allowed: [.HS256]).keys)])
        let token = T.token(header: T.header("HS256", kid: "h"), payload: T.claims(), signer: .trusted(.HS256))
        #expect(T.reason(token, verifier: verifier) == "ok")
    }

    @Test func duplicateKidsAreSkipped() throws {
        let result = try Self.load([
            Self.ecJWK(TestKeys.p256.publicKey, kid: "same"), Self.ecJWK(TestKeys.p256Other.publicKey, kid: "same"),
            Self.ecJWK(TestKeys.p256.publicKey, kid: "other"),
        ])
        #expect(result.keys.compactMap(\.kid) == ["other"])
        #expect(result.skipped.count == 2)
    }

    @Test func documentShapeErrorsThrow() {
        for document in [
            "", "[]", "{}", "{\"keys\":{}}", "{\"keys\":null}", "{\"keys\":[],\"keys\":[]}", "not json", "{\"keys\":[]",
            "\u{FEFF}{\"keys\":[]}",
        ] {
            #expect(throws: KeyLoadError.self, "\(document)") {
                try VerificationKey.jwks(Array(document.utf8), allowedAlgorithms: Set(JWSAlgorithm.allCases))
            }
        }
        #expect((try? VerificationKey.jwks(Array("{\"keys\":[]}".utf8), allowedAlgorithms: []))?.keys.isEmpty == true)
        #expect((try? VerificationKey.jwks(Array("{\"keys\":[{\"kty\":\"RSA\"}]}".utf8), allowedAlgorithms: [.RS256]))?.skipped.count == 1)
    }

    @Test func rocaModulusIsSkipped() throws {
        // Wycheproof json_web_key_test.json group jws_rsa_roca_key.
        let document = try Vectors.json("json_web_key_test")
        let group = try #require(document["testGroups"]?.arrayValue?.first { $0["comment"]?.stringValue == "jws_rsa_roca_key" })
        let keySet = try #require(group["public"])
        let result = try VerificationKey.jwks(Array(JSONWriter.string(keySet).utf8), allowedAlgorithms: [.RS256])
        #expect(result.keys.isEmpty)
        #expect(result.skipped.first?.reason.contains("ROCA") == true)
        // Ordinary keys do not carry the fingerprint.
        #expect(!RSAKeyCheck.hasROCAFingerprint(Array(try TestKeys.rsa.publicKey.getKeyPrimitives().modulus)))
    }
}
