import Crypto
import GatewayTokens

/// Opaque refresh tokens (DESIGN §7): `prt_` + 256 random bits in base64url. Only their SHA-256 is ever stored.
public enum RefreshToken {
    public static let prefix = "prt_"

    /// A new token.
    public static func generate() -> String {
        prefix + Base64URL.encode(randomBytes(32))
    }

    /// The lookup key the store keeps instead of the token.
    public static func hash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(token.utf8)))
    }

    /// Whether `token` has the shape of one of ours (cheap refusal before any store lookup).
    public static func isWellFormed(_ token: String) -> Bool {
        token.hasPrefix(prefix) && token.utf8.count == prefix.utf8.count + 43
            && token.utf8.dropFirst(prefix.utf8.count).allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"):
                    true
                default:
                    false
                }
            }
    }
}

/// The successor pair of a retired refresh token, kept for the reuse grace window only and sealed (AES-GCM) under a
/// key derived from the retired token itself: the store alone cannot open it, only a client presenting that token.
public enum SuccessorSeal {
    static func key(for retiredToken: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: Array(retiredToken.utf8)),
            salt: Array("portcullis refresh successor".utf8), info: [], outputByteCount: 32)
    }

    public static func seal(_ plaintext: [UInt8], under retiredToken: String) throws -> [UInt8] {
        guard let combined = try AES.GCM.seal(plaintext, using: key(for: retiredToken)).combined else {
            throw CryptoKitError.incorrectParameterSize
        }
        return Array(combined)
    }

    /// nil when the box was not sealed under this token (or was tampered with).
    public static func open(_ sealed: [UInt8], with retiredToken: String) -> [UInt8]? {
        guard let box = try? AES.GCM.SealedBox(combined: sealed),
            let plaintext = try? AES.GCM.open(box, using: key(for: retiredToken))
        else { return nil }
        return Array(plaintext)
    }
}

/// `count` bytes from the operating system's CSPRNG (`SystemRandomNumberGenerator` reads getrandom(2)).
func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes: [UInt8] = []
    bytes.reserveCapacity(count + 7)
    while bytes.count < count {
        let word = generator.next() as UInt64
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
    }
    return Array(bytes.prefix(count))
}
