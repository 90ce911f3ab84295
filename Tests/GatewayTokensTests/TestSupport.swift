import Crypto
import Foundation
import GatewayJSON
import Testing
import _CryptoExtras

@testable import GatewayTokens

// MARK: - Encoding helpers

func b64u(_ bytes: some Collection<UInt8>) -> String { Base64URL.encode(bytes) }
func b64u(_ text: String) -> String { Base64URL.encode(Array(text.utf8)) }

func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(hex.utf8.count / 2)
    var high: UInt8? = nil
    for c in hex.utf8 {
        let v: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
        default: continue
        }
        if let h = high {
            out.append(h << 4 | v)
            high = nil
        } else {
            high = v
        }
    }
    return out
}

// MARK: - Vector files

enum Vectors {
    static func bytes(_ name: String) throws -> [UInt8] {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors"))
        return Array(try Data(contentsOf: url))
    }

    static func json(_ name: String) throws -> JSONValue {
        try JSONParser.parse(try bytes(name), limits: JSONLimits(maxDepth: 64, maxBytes: 8 << 20))
    }
}

extension JSONValue {
    var int: Int? { numberValue.map { Int($0) } }
}

/// `{"keys":[jwk]}` as bytes.
func jwksDocument(_ jwks: [JSONValue]) -> [UInt8] {
    Array(JSONWriter.string(.object(JSONObject([("keys", .array(jwks))]))).utf8)
}

// MARK: - Test keys (generated once per test process)

enum TestKeys {
    static let hs256Secret: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    static let hs384Secret: [UInt8] = (0..<48).map { _ in UInt8.random(in: 0...255) }
    static let hs512Secret: [UInt8] = (0..<64).map { _ in UInt8.random(in: 0...255) }
    static let rsa: _RSA.Signing.PrivateKey = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let rsaOther: _RSA.Signing.PrivateKey = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let p256 = P256.Signing.PrivateKey()
    static let p256Other = P256.Signing.PrivateKey()
    static let p384 = P384.Signing.PrivateKey()
    static let ed25519 = Curve25519.Signing.PrivateKey()
    static let ed25519Other = Curve25519.Signing.PrivateKey()

    static func rsaPublicPEM(_ key: _RSA.Signing.PrivateKey = rsa) -> String { key.publicKey.pemRepresentation }

    /// One verification key per algorithm, kid "<alg lowercased>-1" (e.g. "es256-1", "hs256-1", "eddsa-1").
    static let verificationKeys: [VerificationKey] = {
        var keys: [VerificationKey] = []
        keys.append(try! .hmac(secret: hs256Secret, algorithm: .HS256, kid: "hs256-1"))
        keys.append(try! .hmac(secret: hs384Secret, algorithm: .HS384, kid: "hs384-1"))
        keys.append(try! .hmac(secret: hs512Secret, algorithm: .HS512, kid: "hs512-1"))
        for alg in [JWSAlgorithm.RS256, .RS384, .RS512, .PS256, .PS384, .PS512] {
            keys.append(try! .publicKeyPEM(rsaPublicPEM(), algorithm: alg, kid: "\(alg.rawValue.lowercased())-1"))
        }
        keys.append(try! .publicKeyPEM(p256.publicKey.pemRepresentation, algorithm: .ES256, kid: "es256-1"))
        keys.append(try! .publicKeyPEM(p384.publicKey.pemRepresentation, algorithm: .ES384, kid: "es384-1"))
        keys.append(try! .publicKeyPEM(ed25519PEM(ed25519.publicKey), algorithm: .EdDSA, kid: "eddsa-1"))
        return keys
    }()

    static func ed25519PEM(_ key: Curve25519.Signing.PublicKey) -> String {
        let der: [UInt8] = [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00] + Array(key.rawRepresentation)
        return "-----BEGIN PUBLIC KEY-----\n\(Base64Standard.encode(der))\n-----END PUBLIC KEY-----\n"
    }
}

/// Produces signature bytes over a signing input.
enum TestSigner {
    case hmac(JWSAlgorithm, [UInt8])
    case rsa(JWSAlgorithm, _RSA.Signing.PrivateKey)
    case p256(P256.Signing.PrivateKey)
    case p384(P384.Signing.PrivateKey)
    case ed25519(Curve25519.Signing.PrivateKey)
    case fixed([UInt8])

    /// The trusted signer for `alg` (matching `TestKeys.verificationKeys`).
    static func trusted(_ alg: JWSAlgorithm) -> TestSigner {
        switch alg {
        case .HS256: .hmac(.HS256, TestKeys.hs256Secret)
        case .HS384: .hmac(.HS384, TestKeys.hs384Secret)
        case .HS512: .hmac(.HS512, TestKeys.hs512Secret)
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512: .rsa(alg, TestKeys.rsa)
        case .ES256: .p256(TestKeys.p256)
        case .ES384: .p384(TestKeys.p384)
        case .EdDSA: .ed25519(TestKeys.ed25519)
        }
    }

    func sign(_ input: [UInt8]) -> [UInt8] {
        switch self {
        case .hmac(let alg, let secret):
            let key = SymmetricKey(data: secret)
            switch alg {
            case .HS384: return Array(HMAC<SHA384>.authenticationCode(for: input, using: key))
            case .HS512: return Array(HMAC<SHA512>.authenticationCode(for: input, using: key))
            default: return Array(HMAC<SHA256>.authenticationCode(for: input, using: key))
            }
        case .rsa(let alg, let key):
            let padding: _RSA.Signing.Padding = alg.rawValue.hasPrefix("PS") ? .PSS : .insecurePKCS1v1_5
            switch alg {
            case .RS384, .PS384: return Array(try! key.signature(for: SHA384.hash(data: input), padding: padding).rawRepresentation)
            case .RS512, .PS512: return Array(try! key.signature(for: SHA512.hash(data: input), padding: padding).rawRepresentation)
            default: return Array(try! key.signature(for: SHA256.hash(data: input), padding: padding).rawRepresentation)
            }
        case .p256(let key): return Array(try! key.signature(for: input).rawRepresentation)
        case .p384(let key): return Array(try! key.signature(for: input).rawRepresentation)
        case .ed25519(let key): return Array(try! key.signature(for: input))
        case .fixed(let bytes): return bytes
        }
    }
}

// MARK: - Tokens

enum T {
    static let now: Double = 1_767_225_600
    static let issuer = "https://issuer.test"
    static let audience = "https://api.test"

    static func header(_ alg: String, kid: String?, typ: String? = "at+jwt", extra: String = "") -> String {
        var members = ["\"alg\":\"\(alg)\""]
        if let typ { members.append("\"typ\":\"\(typ)\"") }
        if let kid { members.append("\"kid\":\"\(kid)\"") }
        if !extra.isEmpty { members.append(extra) }
        return "{" + members.joined(separator: ",") + "}"
    }

    static func header(_ alg: JWSAlgorithm, extra: String = "") -> String {
        header(alg.rawValue, kid: "\(alg.rawValue.lowercased())-1", extra: extra)
    }

    /// The baseline valid claims every attack case starts from, with overrides. A nil override value removes the claim; values are raw JSON.
    static func claims(_ overrides: [String: String?] = [:], extra: String = "") -> String {
        var members: [(String, String)] = [
            ("iss", "\"\(issuer)\""), ("sub", "\"user-123\""), ("aud", "\"\(audience)\""),
            ("exp", "\(Int(now) + 300)"), ("iat", "\(Int(now))"), ("nbf", "\(Int(now) - 10)"),
            ("jti", "\"jti-1\""), ("client_id", "\"client-1\""), ("scope", "\"read\""), ("sid", "\"sid-1\""),
        ]
        for (name, value) in overrides {
            if let index = members.firstIndex(where: { $0.0 == name }) {
                if let value { members[index].1 = value } else { members.remove(at: index) }
            } else if let value {
                members.append((name, value))
            }
        }
        var parts = members.map { "\"\($0.0)\":\($0.1)" }
        if !extra.isEmpty { parts.append(extra) }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// Signs `b64u(header).b64u(payload)` (header/payload given as raw bytes, used verbatim).
    static func token(headerBytes: [UInt8], payloadBytes: [UInt8], signer: TestSigner) -> String {
        let input = b64u(headerBytes) + "." + b64u(payloadBytes)
        return input + "." + b64u(signer.sign(Array(input.utf8)))
    }

    static func token(header: String, payload: String, signer: TestSigner) -> String {
        token(headerBytes: Array(header.utf8), payloadBytes: Array(payload.utf8), signer: signer)
    }

    /// A properly signed token for `alg` with the trusted key.
    static func ok(_ alg: JWSAlgorithm = .ES256, claims: String = T.claims(), headerExtra: String = "") -> String {
        token(header: header(alg, extra: headerExtra), payload: claims, signer: .trusted(alg))
    }

    static func policy(
        keys: [VerificationKey] = TestKeys.verificationKeys, algorithms: Set<JWSAlgorithm> = Set(JWSAlgorithm.allCases),
        audiences: [String] = [audience], tokenTypes: [String] = ["at+jwt", "application/at+jwt"], requiredClaims: [String] = []
    ) -> IssuerPolicy {
        IssuerPolicy(
            issuer: issuer, keys: keys, algorithms: algorithms, audiences: audiences, tokenTypes: tokenTypes, requiredClaims: requiredClaims
        )
    }

    static let verifier = TokenVerifier(issuers: [policy()], leeway: 30)

    static func reason(_ token: String, verifier: TokenVerifier = T.verifier, now: Double = T.now) -> String {
        switch verifier.verify(token, now: now) {
        case .success: return "ok"
        case .failure(let rejection): return rejection.reason.rawValue
        }
    }

    /// Replaces the signature segment.
    static func withSignature(_ token: String, _ signature: [UInt8]) -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return parts[0] + "." + parts[1] + "." + b64u(signature)
    }

    static func signatureBytes(_ token: String) -> [UInt8] {
        Base64URL.decode(String(token.split(separator: ".", omittingEmptySubsequences: false)[2]))!
    }
}
