import GatewayJSON
import Testing

@testable import GatewayTokens

/// Project Wycheproof at the signature level: every tcId of the files for the allow-listed algorithms goes through
/// `VerificationKey.verify` (the function the token verifier calls). valid → must verify, invalid → must not.
/// "acceptable" (RSA PKCS#1 MissingNull) → our policy is reject, and the test asserts it.
@Suite struct WycheproofCryptoTests {
    struct Tally {
        var valid = 0
        var invalid = 0
        var acceptable = 0
        var skippedKeys = 0
        var total: Int { valid + invalid + acceptable }
    }

    /// Runs every test of every group of `file`; `key` builds the pinned key for a group (nil: the group is not
    /// applicable, e.g. PSS parameters other than those of the JWS algorithm).
    func run(_ file: String, key: (JSONObject) throws -> VerificationKey?) throws -> Tally {
        let document = try Vectors.json(file)
        guard case .array(let groups)? = document["testGroups"] else {
            Issue.record("\(file): no testGroups")
            return Tally()
        }
        var tally = Tally()
        for groupValue in groups {
            guard case .object(let group) = groupValue, case .array(let tests)? = group["tests"] else { continue }
            guard let verificationKey = try key(group) else {
                tally.skippedKeys += 1
                continue
            }
            for test in tests {
                let tcId = test["tcId"]?.int ?? -1
                let message = hexBytes(test["msg"]?.stringValue ?? "")
                let signature = hexBytes(test["sig"]?.stringValue ?? "")
                let verified = verificationKey.verify(message: message, signature: signature)
                switch test["result"]?.stringValue {
                case "valid":
                    #expect(verified, "\(file) tcId \(tcId) (\(test["comment"]?.stringValue ?? "")) must verify")
                    tally.valid += 1
                case "invalid":
                    #expect(!verified, "\(file) tcId \(tcId) (\(test["comment"]?.stringValue ?? "")) must not verify")
                    tally.invalid += 1
                case "acceptable":
                    #expect(!verified, "\(file) tcId \(tcId) acceptable: our policy rejects")
                    tally.acceptable += 1
                default:
                    Issue.record("\(file) tcId \(tcId): unknown result")
                }
            }
        }
        return tally
    }

    func pemKey(_ alg: JWSAlgorithm) -> (JSONObject) throws -> VerificationKey? {
        { group in
            let pem = try #require(group["publicKeyPem"]?.stringValue)
            return try VerificationKey.publicKeyPEM(pem, algorithm: alg)
        }
    }

    @Test func ecdsaP256P1363() throws {
        let tally = try run("ecdsa_secp256r1_sha256_p1363_test", key: pemKey(.ES256))
        #expect(tally.total == 262 && tally.valid == 173 && tally.skippedKeys == 0)
    }

    @Test func ecdsaP384P1363() throws {
        let tally = try run("ecdsa_secp384r1_sha384_p1363_test", key: pemKey(.ES384))
        #expect(tally.total == 280 && tally.valid == 193 && tally.skippedKeys == 0)
    }

    @Test func ecdsaJWKKeysMatchPEM() throws {
        // The same groups loaded from their JWK form verify identically (JWK EC loading path).
        let document = try Vectors.json("ecdsa_secp256r1_sha256_p1363_test")
        guard case .array(let groups)? = document["testGroups"] else { return }
        var compared = 0
        for group in groups.prefix(20) {
            guard let jwk = group["publicKeyJwk"], let pem = group["publicKeyPem"]?.stringValue else { continue }
            let fromJWK = try VerificationKey.jwks(jwksDocument([jwk]), allowedAlgorithms: [.ES256]).keys
            let fromPEM = try VerificationKey.publicKeyPEM(pem, algorithm: .ES256)
            try #require(fromJWK.count == 1)
            #expect(fromJWK[0].thumbprint == fromPEM.thumbprint)
            compared += 1
        }
        #expect(compared > 0)
    }

    @Test(arguments: [
        ("rsa_signature_2048_sha256_test", JWSAlgorithm.RS256, 259),
        ("rsa_signature_2048_sha384_test", .RS384, 258),
        ("rsa_signature_2048_sha512_test", .RS512, 259),
        ("rsa_signature_3072_sha384_test", .RS384, 259),
        ("rsa_signature_4096_sha512_test", .RS512, 259),
    ])
    func rsaPKCS1(_ file: String, _ alg: JWSAlgorithm, _ expectedCount: Int) throws {
        let tally = try run(file, key: pemKey(alg))
        #expect(tally.total == expectedCount)
        #expect(tally.valid > 0 && tally.invalid > 200)
        #expect(tally.skippedKeys == 0)
    }

    @Test(arguments: ["rsa_pss_2048_sha256_mgf1_32_test", "rsa_pss_3072_sha256_mgf1_32_test"])
    func rsaPSS(_ file: String) throws {
        // PS256 = SHA-256, MGF1-SHA-256, salt 32 (RFC 7518 §3.5); other parameter sets are not PS256.
        let tally = try run(file) { group in
            guard group["sha"]?.stringValue == "SHA-256", group["mgf"]?.stringValue == "MGF1",
                group["mgfSha"]?.stringValue == "SHA-256", group["sLen"]?.int == 32
            else { return nil }
            return try VerificationKey.publicKeyPEM(try #require(group["publicKeyPem"]?.stringValue), algorithm: .PS256)
        }
        #expect(tally.total == 108 && tally.valid == 63 && tally.skippedKeys == 0)
    }

    @Test func ed25519() throws {
        let tally = try run("ed25519_test", key: pemKey(.EdDSA))
        #expect(tally.total == 151 && tally.valid == 88 && tally.skippedKeys == 0)
    }

    @Test(arguments: [("hmac_sha256_test", JWSAlgorithm.HS256), ("hmac_sha384_test", .HS384), ("hmac_sha512_test", .HS512)])
    func hmac(_ file: String, _ alg: JWSAlgorithm) throws {
        let document = try Vectors.json(file)
        guard case .array(let groups)? = document["testGroups"] else {
            Issue.record("no groups")
            return
        }
        let fullTagBits = (alg.fixedSignatureLength ?? 0) * 8
        var fullLength = 0
        var truncated = 0
        var shortKeys = 0
        for group in groups {
            guard case .array(let tests)? = group["tests"] else { continue }
            let tagBits = group["tagSize"]?.int ?? 0
            let keyBits = group["keySize"]?.int ?? 0
            for test in tests {
                let tcId = test["tcId"]?.int ?? -1
                let secret = hexBytes(test["key"]?.stringValue ?? "")
                let message = hexBytes(test["msg"]?.stringValue ?? "")
                let tag = hexBytes(test["tag"]?.stringValue ?? "")
                let key: VerificationKey
                do {
                    key = try VerificationKey.hmac(secret: secret, algorithm: alg)
                } catch {
                    // Keys shorter than the hash output are refused at load (RFC 7518 §3.2).
                    #expect(secret.count < alg.minimumHMACKeyLength!, "\(file) tcId \(tcId): key refused: \(error)")
                    #expect(error.code == "key_weak")
                    shortKeys += 1
                    continue
                }
                #expect(keyBits >= alg.minimumHMACKeyLength! * 8)
                let verified = key.verify(message: message, signature: tag)
                if tagBits == fullTagBits {
                    #expect(verified == (test["result"]?.stringValue == "valid"), "\(file) tcId \(tcId)")
                    fullLength += 1
                } else {
                    // A truncated MAC is a valid MAC for the primitive, never for JWS: always rejected.
                    #expect(!verified, "\(file) tcId \(tcId): truncated tag accepted")
                    truncated += 1
                }
            }
        }
        #expect(fullLength > 0 && truncated > 0 && shortKeys > 0)
        #expect(fullLength + truncated + shortKeys == 174)
    }
}
