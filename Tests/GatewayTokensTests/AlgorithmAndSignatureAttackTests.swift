import Crypto
import Foundation
import GatewayJSON
import Testing
import _CryptoExtras

@testable import GatewayTokens

/// Attack cases A-* and S-*: algorithm selection and signature edge cases.
@Suite struct AlgorithmAttackTests {
    static let forged = T.claims(["sub": "\"admin\""])

    @Test(arguments: ["none", "None", "NONE", "nOnE"])
    func algNoneInEveryCasing(_ alg: String) {
        // A-none-*: empty signature.
        let token = b64u(T.header(alg, kid: "es256-1")) + "." + b64u(Self.forged) + "."
        #expect(T.reason(token) == "algorithm_not_allowed")
        // A-none-keepsig: the original ES256 signature kept.
        let signature = T.signatureBytes(T.ok(.ES256))
        let kept = b64u(T.header(alg, kid: "es256-1")) + "." + b64u(Self.forged) + "." + b64u(signature)
        #expect(T.reason(kept) == "algorithm_not_allowed")
        // Even an issuer whose allow-list is empty cannot be talked into it.
        let verifier = TokenVerifier(issuers: [T.policy(algorithms: [])])
        #expect(T.reason(token, verifier: verifier) == "algorithm_not_allowed")
    }

    @Test func algMissingNullArray() {
        for header in [
            "{\"typ\":\"at+jwt\",\"kid\":\"es256-1\"}",
            "{\"alg\":null,\"typ\":\"at+jwt\",\"kid\":\"es256-1\"}",
            "{\"alg\":[\"ES256\"],\"typ\":\"at+jwt\",\"kid\":\"es256-1\"}",
            "{\"alg\":256,\"typ\":\"at+jwt\",\"kid\":\"es256-1\"}",
        ] {
            let token = T.token(header: header, payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(token) == "token_malformed", "\(header)")
        }
    }

    @Test func algNearMisses() {
        for alg in ["es256", "ES256 ", " ES256", "Es256", "ES512", "RS1", "HS256\\u0000", "ES256K", "Ed25519", "EDDSA"] {
            let token = T.token(header: T.header(alg, kid: "es256-1"), payload: T.claims(), signer: .trusted(.ES256))
            #expect(T.reason(token) == "algorithm_not_allowed", "\(alg)")
        }
    }

    @Test func algNotInIssuerAllowList() {
        let verifier = TokenVerifier(issuers: [T.policy(algorithms: [.RS256])])
        #expect(T.reason(T.ok(.ES256), verifier: verifier) == "algorithm_not_allowed")
        #expect(T.reason(T.ok(.RS256), verifier: verifier) == "ok")
    }

    @Test func algMismatchWithKey() {
        // A-alg-mismatch-key: header RS256, kid of the ES256 key, valid ES256 signature.
        let token = T.token(header: T.header("RS256", kid: "es256-1"), payload: T.claims(), signer: .trusted(.ES256))
        #expect(T.reason(token) == "algorithm_not_allowed")
        // A-alg-hs384-on-hs256-key: HMAC width swap.
        let swap = T.token(header: T.header("HS384", kid: "hs256-1"), payload: T.claims(), signer: .hmac(.HS384, TestKeys.hs256Secret))
        #expect(T.reason(swap) == "algorithm_not_allowed")
        // RS256 key used with PS256 header (same RSA key material, different pin).
        let pss = T.token(header: T.header("PS256", kid: "rs256-1"), payload: T.claims(), signer: .rsa(.PS256, TestKeys.rsa))
        #expect(T.reason(pss) == "algorithm_not_allowed")
    }

    @Test func keyWithoutAlgInJWKSCannotBeSteeredByHeader() throws {
        // W-alg-less-key: an RSA JWK without alg is pinned by the allow-list, never by the token header.
        let primitives = try TestKeys.rsa.publicKey.getKeyPrimitives()
        let jwk =
            "{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"\(b64u(Array(primitives.modulus)))\",\"e\":\"\(b64u(Array(primitives.publicExponent)))\"}"
        let loaded = try VerificationKey.jwks(Array("{\"keys\":[\(jwk)]}".utf8), allowedAlgorithms: [.RS256, .ES256])
        #expect(loaded.keys.map(\.algorithm) == [.RS256])
        let verifier = TokenVerifier(issuers: [T.policy(keys: loaded.keys, algorithms: [.RS256, .ES256, .RS384, .PS256])])
        for alg in [JWSAlgorithm.RS384, .PS256] {
            let token = T.token(header: T.header(alg.rawValue, kid: "r"), payload: T.claims(), signer: .rsa(alg, TestKeys.rsa))
            #expect(T.reason(token, verifier: verifier) == "algorithm_not_allowed", "\(alg)")
        }
        let good = T.token(header: T.header("RS256", kid: "r"), payload: T.claims(), signer: .rsa(.RS256, TestKeys.rsa))
        #expect(T.reason(good, verifier: verifier) == "ok")
    }

    /// Every serialisation of the public key an attacker could use as an HMAC secret.
    static func confusionSecrets() throws -> [(String, [UInt8])] {
        let pem = TestKeys.rsa.publicKey.pemRepresentation
        let withNewline = pem.hasSuffix("\n") ? pem : pem + "\n"
        let withoutNewline = String(withNewline.dropLast())
        let primitives = try TestKeys.rsa.publicKey.getKeyPrimitives()
        let jwk = "{\"e\":\"\(b64u(Array(primitives.publicExponent)))\",\"kty\":\"RSA\",\"n\":\"\(b64u(Array(primitives.modulus)))\"}"
        return [
            ("spki-pem", Array(withNewline.utf8)),
            ("spki-pem-nonl", Array(withoutNewline.utf8)),
            ("pkcs1-pem", Array(TestKeys.rsa.publicKey.pkcs1PEMRepresentation.utf8)),
            ("spki-der", Array(TestKeys.rsa.publicKey.derRepresentation)),
            ("pkcs1-der", Array(TestKeys.rsa.publicKey.pkcs1DERRepresentation)),
            ("jwk-json", Array(jwk.utf8)),
            ("ec-spki-pem", Array(TestKeys.p256.publicKey.pemRepresentation.utf8)),
            ("ec-raw", Array(TestKeys.p256.publicKey.x963Representation)),
            ("empty", []),
        ]
    }

    @Test func algorithmConfusionRSToHS() throws {
        let rsaOnly = TokenVerifier(issuers: [T.policy(algorithms: [.RS256])])
        let rsaAndHS = TokenVerifier(issuers: [T.policy(algorithms: [.RS256, .HS256, .ES256])])
        let singleKeyHS = TokenVerifier(issuers: [
            T.policy(keys: [try .publicKeyPEM(TestKeys.rsaPublicPEM(), algorithm: .RS256)], algorithms: [.RS256, .HS256])
        ])
        for (name, secret) in try Self.confusionSecrets() {
            for kid in ["rs256-1", "es256-1"] {
                let token = T.token(header: T.header("HS256", kid: kid), payload: Self.forged, signer: .hmac(.HS256, secret))
                #expect(T.reason(token) == "algorithm_not_allowed", "\(name) kid \(kid)")
                #expect(T.reason(token, verifier: rsaOnly) == "algorithm_not_allowed", "\(name)")
                #expect(T.reason(token, verifier: rsaAndHS) == "algorithm_not_allowed", "\(name)")
            }
            // A-confusion-nokid: no kid never means "try every key" or "default key".
            let noKid = T.token(header: T.header("HS256", kid: nil), payload: Self.forged, signer: .hmac(.HS256, secret))
            #expect(T.reason(noKid) == "key_unknown", "\(name)")
            #expect(T.reason(noKid, verifier: singleKeyHS) == "algorithm_not_allowed", "\(name)")
        }
    }
}

@Suite struct SignatureAttackTests {
    static let p256Order = hexBytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
    static let ed25519L: [UInt8] = hexBytes("1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed")

    func forged(_ signature: [UInt8], alg: String = "ES256", kid: String = "es256-1") -> String {
        b64u(T.header(alg, kid: kid)) + "." + b64u(T.claims(["sub": "\"admin\""])) + "." + b64u(signature)
    }

    @Test func psychicSignatures() {
        let zero = [UInt8](repeating: 0, count: 32)
        var one = zero
        one[31] = 1
        let n = Self.p256Order
        for (name, signature) in [
            ("r0s0", zero + zero), ("r0s1", zero + one), ("r1s0", one + zero), ("rnsn", n + n), ("rn-s1", n + one),
        ] {
            #expect(T.reason(forged(signature)) == "signature_invalid", "\(name)")
        }
        // 86 characters of "A" (64 zero bytes).
        #expect(
            T.reason(b64u(T.header("ES256", kid: "es256-1")) + "." + b64u(T.claims()) + "." + String(repeating: "A", count: 86))
                == "signature_invalid")
        // DER psychic signature 30 06 02 01 00 02 01 00.
        #expect(T.reason(b64u(T.header("ES256", kid: "es256-1")) + "." + b64u(T.claims()) + ".MAYCAQACAQA") == "signature_invalid")
        // Same for P-384 (96 zero bytes) and Ed25519 (64 zero bytes).
        #expect(T.reason(forged([UInt8](repeating: 0, count: 96), alg: "ES384", kid: "es384-1")) == "signature_invalid")
        #expect(T.reason(forged([UInt8](repeating: 0, count: 64), alg: "EdDSA", kid: "eddsa-1")) == "signature_invalid")
    }

    @Test func ecdsaEncodingAndLength() throws {
        let token = T.ok(.ES256)
        let raw = T.signatureBytes(token)
        let der = Array(try P256.Signing.ECDSASignature(rawRepresentation: raw).derRepresentation)
        #expect(der.count >= 68 && der.count <= 72)
        #expect(T.reason(T.withSignature(token, der)) == "signature_invalid")  // S-ecdsa-der
        #expect(T.reason(T.withSignature(token, Array(raw.dropLast()))) == "signature_invalid")  // S-ecdsa-63
        #expect(T.reason(T.withSignature(token, raw + [0])) == "signature_invalid")  // S-ecdsa-65
        #expect(T.reason(T.withSignature(token, [0] + raw)) == "signature_invalid")
        #expect(T.reason(T.withSignature(token, Array(raw[32...] + raw[..<32]))) == "signature_invalid")  // S-ecdsa-swap
        #expect(T.reason(T.withSignature(token, raw + raw[32...])) == "signature_invalid")  // 96 bytes on P-256
        // S-es384-on-p256: ES384 header against the P-256 key, 96-byte signature.
        let es384 = T.token(header: T.header("ES384", kid: "es256-1"), payload: T.claims(), signer: .p384(TestKeys.p384))
        #expect(T.reason(es384) == "algorithm_not_allowed")
        // P-384 DER too.
        let token384 = T.ok(.ES384)
        let der384 = Array(try P384.Signing.ECDSASignature(rawRepresentation: T.signatureBytes(token384)).derRepresentation)
        #expect(T.reason(T.withSignature(token384, der384)) == "signature_invalid")
    }

    @Test func ed25519Edges() {
        let token = T.ok(.EdDSA)
        let signature = T.signatureBytes(token)
        // S-ed-s-plus-l: S (little-endian, second half) + L.
        let s = Array(signature[32...].reversed())
        let sPlusL = bigAdd(s, Self.ed25519L)
        let malleated = Array(signature[..<32]) + Array(sPlusL.reversed())
        #expect(T.reason(T.withSignature(token, malleated)) == "signature_invalid")
        #expect(T.reason(T.withSignature(token, Array(signature.dropLast()))) == "signature_invalid")  // S-ed-63
        #expect(T.reason(T.withSignature(token, signature + [0])) == "signature_invalid")  // S-ed-65
        #expect(T.reason(T.withSignature(token, [])) == "signature_invalid")
        // Signed by another Ed25519 key.
        let other = T.token(header: T.header(.EdDSA), payload: T.claims(), signer: .ed25519(TestKeys.ed25519Other))
        #expect(T.reason(other) == "signature_invalid")
    }

    @Test func rsaEdges() throws {
        let token = T.ok(.RS256)
        let signature = T.signatureBytes(token)
        #expect(signature.count == 256)
        #expect(T.reason(T.withSignature(token, [0] + signature)) == "signature_invalid")  // S-rsa-prepend0
        #expect(T.reason(T.withSignature(token, Array(signature.dropFirst()))) == "signature_invalid")
        #expect(T.reason(T.withSignature(token, [UInt8](repeating: 0, count: 256))) == "signature_invalid")  // S-rsa-sig0
        let n = Array(try TestKeys.rsa.publicKey.getKeyPrimitives().modulus)
        #expect(T.reason(T.withSignature(token, Array(n.suffix(256)))) == "signature_invalid")  // S-rsa-sign
        var one = [UInt8](repeating: 0, count: 256)
        one[255] = 1
        #expect(T.reason(T.withSignature(token, one)) == "signature_invalid")
        // S-rsa-pss-as-rs: PS256 signature under an RS256 header.
        let pss = T.token(header: T.header(.RS256), payload: T.claims(), signer: .rsa(.PS256, TestKeys.rsa))
        #expect(T.reason(pss) == "signature_invalid")
        // …and the reverse.
        let pkcs1 = T.token(header: T.header(.PS256), payload: T.claims(), signer: .rsa(.RS256, TestKeys.rsa))
        #expect(T.reason(pkcs1) == "signature_invalid")
        // Another key's signature.
        let other = T.token(header: T.header(.RS256), payload: T.claims(), signer: .rsa(.RS256, TestKeys.rsaOther))
        #expect(T.reason(other) == "signature_invalid")
        // SHA width swap with the right key (RS384 signature under an RS256 header).
        let width = T.token(header: T.header(.RS256), payload: T.claims(), signer: .rsa(.RS384, TestKeys.rsa))
        #expect(T.reason(width) == "signature_invalid")
    }

    @Test func pssSaltLengthIsFixed() throws {
        // S-rsa-pss-salt: PS256 requires salt length 32 (RFC 7518 §3.5). Build EMSA-PSS by hand and apply the raw
        // RSA private operation (swift-crypto's blind-signing key), so that salt lengths 0 and 64 can be produced.
        let raw = try _RSA.BlindSigning.PrivateKey(derRepresentation: TestKeys.rsa.derRepresentation)
        let header = b64u(T.header(.PS256))
        let input = Array((header + "." + b64u(T.claims())).utf8)
        func token(saltLength: Int) throws -> String {
            let em = emsaPSSEncode(message: input, saltLength: saltLength, emBits: 2047)
            let signature = Array(try raw.blindSignature(for: em).rawRepresentation)
            return header + "." + b64u(T.claims()) + "." + b64u(signature)
        }
        #expect(T.reason(try token(saltLength: 32)) == "ok")  // the hand-made encoder is right
        #expect(T.reason(try token(saltLength: 0)) == "signature_invalid")
        #expect(T.reason(try token(saltLength: 20)) == "signature_invalid")
        #expect(T.reason(try token(saltLength: 64)) == "signature_invalid")
    }

    @Test func hmacEdges() {
        let token = T.ok(.HS256)
        let tag = T.signatureBytes(token)
        #expect(T.reason(T.withSignature(token, Array(tag.prefix(16)))) == "signature_invalid")  // S-hmac-trunc16
        #expect(T.reason(T.withSignature(token, Array(tag.prefix(31)))) == "signature_invalid")
        #expect(T.reason(T.withSignature(token, tag + [0])) == "signature_invalid")
        #expect(T.reason(T.withSignature(token, [])) == "signature_invalid")  // S-sig-empty
        var flipped = tag
        flipped[31] ^= 1
        #expect(T.reason(T.withSignature(token, flipped)) == "signature_invalid")
        // S-hmac-empty-key: MAC keyed with "" against the configured secret.
        let empty = T.token(header: T.header(.HS256), payload: T.claims(), signer: .hmac(.HS256, []))
        #expect(T.reason(empty) == "signature_invalid")
        // A 64-byte HS512 tag on the HS256 key.
        let wide = T.token(header: T.header("HS256", kid: "hs256-1"), payload: T.claims(), signer: .hmac(.HS512, TestKeys.hs256Secret))
        #expect(T.reason(wide) == "signature_invalid")
    }

    @Test func signatureOverReceivedBytesOnly() {
        // The same claims re-encoded differently (whitespace) do not carry the old signature.
        let token = T.ok(.HS256)
        let parts = token.split(separator: ".")
        let respaced = parts[0] + "." + b64u(T.claims().replacingOccurrences(of: ",", with: ", ")) + "." + parts[2]
        #expect(T.reason(respaced) == "signature_invalid")
    }
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with SHA-256 and MGF1-SHA-256, any salt length.
func emsaPSSEncode(message: [UInt8], saltLength: Int, emBits: Int) -> [UInt8] {
    let emLength = (emBits + 7) / 8
    let mHash = Array(SHA256.hash(data: message))
    let salt = (0..<saltLength).map { _ in UInt8.random(in: 0...255) }
    let mPrime = [UInt8](repeating: 0, count: 8) + mHash + salt
    let h = Array(SHA256.hash(data: mPrime))
    let db = [UInt8](repeating: 0, count: emLength - saltLength - 32 - 2) + [0x01] + salt
    var mask: [UInt8] = []
    var counter: UInt32 = 0
    while mask.count < db.count {
        let c = [UInt8(counter >> 24), UInt8(counter >> 16 & 0xFF), UInt8(counter >> 8 & 0xFF), UInt8(counter & 0xFF)]
        mask += Array(SHA256.hash(data: h + c))
        counter += 1
    }
    var maskedDB = zip(db, mask).map { $0 ^ $1 }
    maskedDB[0] &= 0xFF >> (8 * emLength - emBits)
    return maskedDB + h + [0xBC]
}
