import Crypto
import GatewayJSON
import _CryptoExtras

import struct Foundation.Data

/// A verification key pinned to exactly one algorithm (RFC 8725 §3.1). The swift-crypto key object is built once,
/// at load time; verification never parses key material.
public struct VerificationKey: Sendable {
    public let kid: String?
    public let algorithm: JWSAlgorithm
    let material: Material
    private let thumbprintValue: String?
    /// The RFC 7638 required members of the public JWK, in lexicographic order (nil for HMAC keys).
    private let jwkMembers: [(String, String)]?

    enum Material: Sendable {
        case hmac(SymmetricKey)
        case rsa(_RSA.Signing.PublicKey, signatureLength: Int)
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case ed25519(Curve25519.Signing.PublicKey)
    }

    private init(kid: String?, algorithm: JWSAlgorithm, material: Material, jwkMembers: [(String, String)]?) {
        self.kid = kid
        self.algorithm = algorithm
        self.material = material
        self.jwkMembers = jwkMembers
        self.thumbprintValue = jwkMembers.map(Self.jwkThumbprint)
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url). nil for HMAC keys: a hash of a secret is not published.
    public var thumbprint: String? { thumbprintValue }

    /// The public key as a JWK for a published key set: its required members plus `kid`, `alg` and `use`. nil for
    /// HMAC keys, which are never published.
    public var publicJWK: JSONObject? {
        guard let jwkMembers else { return nil }
        var object = JSONObject(jwkMembers.map { ($0.0, JSONValue.string($0.1)) })
        if let kid { object["kid"] = .string(kid) }
        object["alg"] = .string(algorithm.rawValue)
        object["use"] = .string("sig")
        return object
    }

    // MARK: - Loading

    /// An HMAC secret for HS256/HS384/HS512. The secret must be at least as long as the hash output
    /// (32/48/64 bytes, RFC 7518 §3.2).
    public static func hmac(secret: [UInt8], algorithm: JWSAlgorithm, kid: String? = nil) throws(KeyLoadError) -> VerificationKey {
        guard let minimum = algorithm.minimumHMACKeyLength else {
            throw .mismatch("an HMAC secret can only be used with HS256, HS384 or HS512, not \(algorithm.rawValue)")
        }
        guard secret.count >= minimum else {
            throw .weak("the HMAC secret for \(algorithm.rawValue) must be at least \(minimum) bytes, got \(secret.count)")
        }
        return VerificationKey(kid: kid, algorithm: algorithm, material: .hmac(SymmetricKey(data: secret)), jwkMembers: nil)
    }

    /// SPKI PEM ("BEGIN PUBLIC KEY") of an RSA / P-256 / P-384 / Ed25519 key, or an X.509 certificate PEM
    /// ("BEGIN CERTIFICATE", the subject key is taken; the certificate itself is not validated). Exactly one PEM
    /// block, surrounded only by whitespace. The key type must fit `algorithm`; RSA under 2048 bits is refused.
    public static func publicKeyPEM(_ pem: String, algorithm: JWSAlgorithm, kid: String? = nil) throws(KeyLoadError) -> VerificationKey {
        guard let (label, der) = PEM.parse(pem) else {
            throw .invalid("not a single well-formed PEM block")
        }
        switch label {
        case "PUBLIC KEY":
            return try fromSPKI(der, algorithm: algorithm, kid: kid)
        case "CERTIFICATE":
            guard let spki = SPKI.fromCertificate(der) else { throw .invalid("the certificate could not be parsed") }
            return try fromSPKI(spki, algorithm: algorithm, kid: kid)
        default:
            if label.contains("PRIVATE KEY") {
                throw .privateKey("a private key was given where a public key is expected; configure the public key only")
            }
            throw .unsupported("PEM type \"\(label)\" is not supported; use BEGIN PUBLIC KEY (SPKI) or BEGIN CERTIFICATE")
        }
    }

    /// A DER SubjectPublicKeyInfo.
    static func fromSPKI(_ der: [UInt8], algorithm: JWSAlgorithm, kid: String?) throws(KeyLoadError) -> VerificationKey {
        guard let type = SPKI.keyType(der) else { throw .invalid("not a well-formed SubjectPublicKeyInfo") }
        switch type {
        case .rsa:
            guard algorithm.isRSA else { throw .mismatch("an RSA key cannot be used with \(algorithm.rawValue)") }
            let key: _RSA.Signing.PublicKey
            do {
                key = try _RSA.Signing.PublicKey(unsafeDERRepresentation: der)
            } catch {
                throw .weak("the RSA key could not be loaded (keys under 2048 bits are refused)")
            }
            guard let primitives = try? key.getKeyPrimitives() else { throw .invalid("the RSA key could not be read") }
            return try rsa(n: Array(primitives.modulus), e: Array(primitives.publicExponent), algorithm: algorithm, kid: kid)
        case .p256:
            guard algorithm == .ES256 else { throw .mismatch("a P-256 key can only be used with ES256, not \(algorithm.rawValue)") }
            guard let key = try? P256.Signing.PublicKey(derRepresentation: der) else {
                throw .invalid("the P-256 key is not a valid point")
            }
            return ec256(key, kid: kid)
        case .p384:
            guard algorithm == .ES384 else { throw .mismatch("a P-384 key can only be used with ES384, not \(algorithm.rawValue)") }
            guard let key = try? P384.Signing.PublicKey(derRepresentation: der) else {
                throw .invalid("the P-384 key is not a valid point")
            }
            return ec384(key, kid: kid)
        case .ed25519(let raw):
            guard algorithm == .EdDSA else { throw .mismatch("an Ed25519 key can only be used with EdDSA, not \(algorithm.rawValue)") }
            return try ed25519(raw: raw, kid: kid)
        case .unsupported:
            throw .unsupported("unsupported public key type (RSA, P-256, P-384 and Ed25519 are supported)")
        }
    }

    static func rsa(n rawN: [UInt8], e rawE: [UInt8], algorithm: JWSAlgorithm, kid: String?) throws(KeyLoadError) -> VerificationKey {
        guard algorithm.isRSA else { throw .mismatch("an RSA key cannot be used with \(algorithm.rawValue)") }
        let n = Array(rawN.drop(while: { $0 == 0 }))
        let e = Array(rawE.drop(while: { $0 == 0 }))
        let bits = RSAKeyCheck.bitLength(n)
        guard bits >= 2048 else { throw .weak("RSA keys under 2048 bits are refused (got \(bits) bits)") }
        guard bits <= 8192 else { throw .unsupported("RSA keys over 8192 bits are refused (got \(bits) bits)") }
        guard n.last.map({ $0 & 1 == 1 }) == true else { throw .invalid("the RSA modulus is even") }
        guard (1...4).contains(e.count), e.last.map({ $0 & 1 == 1 }) == true else {
            throw .weak("the RSA public exponent must be odd and fit in 32 bits")
        }
        var exponent: UInt64 = 0
        for byte in e { exponent = exponent << 8 | UInt64(byte) }
        guard exponent >= 3 else { throw .weak("the RSA public exponent must be at least 3") }
        guard !RSAKeyCheck.hasROCAFingerprint(n) else {
            throw .weak("the RSA modulus has the ROCA fingerprint (CVE-2017-15361)")
        }
        let key: _RSA.Signing.PublicKey
        do {
            key = try _RSA.Signing.PublicKey(n: n, e: e)
        } catch {
            throw .invalid("the RSA key was refused by the crypto library")
        }
        let members = [("e", Base64URL.encode(e)), ("kty", "RSA"), ("n", Base64URL.encode(n))]
        return VerificationKey(
            kid: kid, algorithm: algorithm, material: .rsa(key, signatureLength: (key.keySizeInBits + 7) / 8), jwkMembers: members)
    }

    static func ec256(_ key: P256.Signing.PublicKey, kid: String?) -> VerificationKey {
        let point = Array(key.x963Representation)  // 04 || x || y
        let members = [
            ("crv", "P-256"), ("kty", "EC"), ("x", Base64URL.encode(point[1..<33])), ("y", Base64URL.encode(point[33..<65])),
        ]
        return VerificationKey(kid: kid, algorithm: .ES256, material: .p256(key), jwkMembers: members)
    }

    static func ec384(_ key: P384.Signing.PublicKey, kid: String?) -> VerificationKey {
        let point = Array(key.x963Representation)
        let members = [
            ("crv", "P-384"), ("kty", "EC"), ("x", Base64URL.encode(point[1..<49])), ("y", Base64URL.encode(point[49..<97])),
        ]
        return VerificationKey(kid: kid, algorithm: .ES384, material: .p384(key), jwkMembers: members)
    }

    static func ed25519(raw: [UInt8], kid: String?) throws(KeyLoadError) -> VerificationKey {
        if let problem = Ed25519KeyCheck.problem(raw) { throw .invalid(problem) }
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            throw .invalid("the Ed25519 key was refused by the crypto library")
        }
        let members = [("crv", "Ed25519"), ("kty", "OKP"), ("x", Base64URL.encode(raw))]
        return VerificationKey(kid: kid, algorithm: .EdDSA, material: .ed25519(key), jwkMembers: members)
    }

    /// RFC 7638: the required members in lexicographic order, no whitespace, SHA-256, base64url.
    private static func jwkThumbprint(_ members: [(String, String)]) -> String {
        var json: [UInt8] = [UInt8(ascii: "{")]
        for (i, (name, value)) in members.enumerated() {
            if i > 0 { json.append(UInt8(ascii: ",")) }
            JSONWriter.appendString(name, to: &json)
            json.append(UInt8(ascii: ":"))
            JSONWriter.appendString(value, to: &json)
        }
        json.append(UInt8(ascii: "}"))
        return Base64URL.encode(Array(SHA256.hash(data: json)))
    }

    // MARK: - Verification

    /// Verifies `signature` over `signingInput` with this key and its pinned algorithm. Lengths are exact:
    /// 32/48/64-byte MACs, 64/96-byte raw R‖S for ECDSA (never DER), 64 bytes for Ed25519, the modulus length for RSA.
    func verify(signingInput: UnsafeRawBufferPointer, signature: UnsafeRawBufferPointer) -> Bool {
        switch material {
        case .hmac(let key):
            guard signature.count == algorithm.fixedSignatureLength else { return false }
            switch algorithm {
            case .HS256: return HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
            case .HS384: return HMAC<SHA384>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
            case .HS512: return HMAC<SHA512>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
            default: return false
            }
        case .rsa(let key, let signatureLength):
            guard signature.count == signatureLength else { return false }
            let rsaSignature = _RSA.Signing.RSASignature(rawRepresentation: signature)
            switch algorithm {
            case .RS256: return key.isValidSignature(rsaSignature, for: digest(SHA256.self, signingInput), padding: .insecurePKCS1v1_5)
            case .RS384: return key.isValidSignature(rsaSignature, for: digest(SHA384.self, signingInput), padding: .insecurePKCS1v1_5)
            case .RS512: return key.isValidSignature(rsaSignature, for: digest(SHA512.self, signingInput), padding: .insecurePKCS1v1_5)
            // `.PSS` is MGF1 with the message hash and a salt exactly as long as the hash (RFC 7518 §3.5).
            case .PS256: return key.isValidSignature(rsaSignature, for: digest(SHA256.self, signingInput), padding: .PSS)
            case .PS384: return key.isValidSignature(rsaSignature, for: digest(SHA384.self, signingInput), padding: .PSS)
            case .PS512: return key.isValidSignature(rsaSignature, for: digest(SHA512.self, signingInput), padding: .PSS)
            default: return false
            }
        case .p256(let key):
            guard signature.count == 64, Self.bothHalvesNonZero(signature),
                let ecdsa = try? P256.Signing.ECDSASignature(rawRepresentation: signature)
            else { return false }
            return key.isValidSignature(ecdsa, for: digest(SHA256.self, signingInput))
        case .p384(let key):
            guard signature.count == 96, Self.bothHalvesNonZero(signature),
                let ecdsa = try? P384.Signing.ECDSASignature(rawRepresentation: signature)
            else { return false }
            return key.isValidSignature(ecdsa, for: digest(SHA384.self, signingInput))
        case .ed25519(let key):
            guard signature.count == 64 else { return false }
            return key.isValidSignature(signature, for: signingInput)
        }
    }

    /// Convenience for tests and tools: verify over arbitrary bytes.
    func verify(message: [UInt8], signature: [UInt8]) -> Bool {
        message.withUnsafeBytes { m in signature.withUnsafeBytes { s in verify(signingInput: m, signature: s) } }
    }

    /// r ≠ 0 and s ≠ 0 (CVE-2022-21449). The library checks too; this keeps the property independent of it.
    private static func bothHalvesNonZero(_ signature: UnsafeRawBufferPointer) -> Bool {
        let half = signature.count / 2
        var r: UInt8 = 0
        var s: UInt8 = 0
        for i in 0..<half {
            r |= signature[i]
            s |= signature[half + i]
        }
        return r != 0 && s != 0
    }
}

@inline(__always)
private func digest<H: HashFunction>(_: H.Type, _ input: UnsafeRawBufferPointer) -> H.Digest {
    var hasher = H()
    hasher.update(bufferPointer: input)
    return hasher.finalize()
}
