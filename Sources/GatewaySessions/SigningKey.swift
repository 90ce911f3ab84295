import Crypto
import GatewayTokens
import _CryptoExtras

/// A private key the token service signs access tokens with, pinned to one algorithm, with `kid` = the RFC 7638
/// thumbprint of its public key, so the `kid` is stable and derived from the key, never chosen.
public struct SigningKey: Sendable {
    enum Material: Sendable {
        case p256(P256.Signing.PrivateKey)
        case ed25519(Curve25519.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey, pss: Bool)
    }

    public let algorithm: JWSAlgorithm
    let material: Material
    /// The public half, as the verifier uses it (and as the JWKS publishes it).
    public let verificationKey: VerificationKey

    /// Algorithms the token service signs with.
    public static let supportedAlgorithms: [JWSAlgorithm] = [.ES256, .EdDSA, .RS256, .PS256]

    public var kid: String { verificationKey.kid ?? "" }

    /// A new random key.
    public static func generate(_ algorithm: JWSAlgorithm) throws(KeyLoadError) -> SigningKey {
        switch algorithm {
        case .ES256: return try SigningKey(algorithm: algorithm, material: .p256(P256.Signing.PrivateKey()))
        case .EdDSA: return try SigningKey(algorithm: algorithm, material: .ed25519(Curve25519.Signing.PrivateKey()))
        case .RS256, .PS256:
            do {
                let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
                return try SigningKey(algorithm: algorithm, material: .rsa(key, pss: algorithm == .PS256))
            } catch let error as KeyLoadError {
                throw error
            } catch {
                throw KeyLoadError(code: "key_invalid", message: "RSA key generation failed")
            }
        default:
            throw KeyLoadError(
                code: "key_unsupported", message: "the token service signs with ES256, EdDSA, RS256 or PS256, not \(algorithm.rawValue)")
        }
    }

    /// A key from its PKCS #8 PEM, as `pem` writes it.
    public init(pem: String, algorithm: JWSAlgorithm) throws(KeyLoadError) {
        let material: Material
        do {
            switch algorithm {
            case .ES256: material = .p256(try P256.Signing.PrivateKey(pemRepresentation: pem))
            case .EdDSA: material = .ed25519(try Curve25519.Signing.PrivateKey(pemRepresentation: pem))
            case .RS256, .PS256: material = .rsa(try _RSA.Signing.PrivateKey(pemRepresentation: pem), pss: algorithm == .PS256)
            default: throw KeyLoadError(code: "key_unsupported", message: "cannot sign with \(algorithm.rawValue)")
            }
        } catch let error as KeyLoadError {
            throw error
        } catch {
            throw KeyLoadError(code: "key_invalid", message: "not a \(algorithm.rawValue) private key in PEM form")
        }
        try self.init(algorithm: algorithm, material: material)
    }

    private init(algorithm: JWSAlgorithm, material: Material) throws(KeyLoadError) {
        self.algorithm = algorithm
        self.material = material
        let publicPEM: String
        switch material {
        case .p256(let key): publicPEM = key.publicKey.pemRepresentation
        case .ed25519(let key): publicPEM = key.publicKey.pemRepresentation
        case .rsa(let key, _): publicPEM = key.publicKey.pemRepresentation
        }
        // Derive the kid from the public key itself: load it once without a kid to get its thumbprint.
        let anonymous = try VerificationKey.publicKeyPEM(publicPEM, algorithm: algorithm)
        self.verificationKey = try VerificationKey.publicKeyPEM(publicPEM, algorithm: algorithm, kid: anonymous.thumbprint)
    }

    /// PKCS #8 PEM of the private key.
    public var pem: String {
        switch material {
        case .p256(let key): key.pemRepresentation
        case .ed25519(let key): key.pemRepresentation
        case .rsa(let key, _): key.pemRepresentation
        }
    }

    /// The JWS signature of `signingInput` (`base64url(header).base64url(payload)`).
    public func sign(_ signingInput: [UInt8]) throws -> [UInt8] {
        switch material {
        case .p256(let key): Array(try key.signature(for: signingInput).rawRepresentation)
        case .ed25519(let key): Array(try key.signature(for: signingInput))
        case .rsa(let key, let pss):
            Array(try key.signature(for: SHA256.hash(data: signingInput), padding: pss ? .PSS : .insecurePKCS1v1_5).rawRepresentation)
        }
    }
}
