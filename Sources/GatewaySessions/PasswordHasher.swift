import CCrypt
import GatewayTokens

/// crypt(3) password hashes through libxcrypt: bcrypt (`$2b$`, `$2y$`), yescrypt (`$y$`) and sha512-crypt (`$6$`).
/// Plaintext and the weak legacy methods (DES, MD5, `$2a$`) are refused. Hashing is slow on purpose: call it off the
/// event loop.
public enum PasswordHasher {
    /// Prefixes a stored hash may have.
    public static let acceptedPrefixes = ["$2b$", "$2y$", "$y$", "$6$"]

    /// Whether `hash` uses an accepted method (it says nothing about whether it is well-formed).
    public static func isAcceptedHash(_ hash: String) -> Bool {
        acceptedPrefixes.contains { hash.hasPrefix($0) }
    }

    /// The shape of an accepted hash: bcrypt `$2b$NN$` + 53 characters (cost 4–31), sha512-crypt
    /// `$6$[rounds=N$]salt$` + 86, yescrypt `$y$params$salt$` + 43, all in crypt's base64 alphabet.
    public static func isWellFormed(_ hash: String) -> Bool {
        let cryptAlphabet: (Character) -> Bool = { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "/") }
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].isEmpty else { return false }
        switch parts[1] {
        case "2b", "2y":
            guard parts.count == 4, let cost = Int(parts[2]), parts[2].count == 2, (4...31).contains(cost) else { return false }
            return parts[3].count == 53 && parts[3].allSatisfy(cryptAlphabet)
        case "6":
            let rest = parts.count == 5 && parts[2].hasPrefix("rounds=") ? Array(parts[3...]) : Array(parts[2...])
            guard rest.count == 2, (1...16).contains(rest[0].count) else { return false }
            return rest[1].count == 86 && rest[1].allSatisfy(cryptAlphabet)
        case "y":
            guard parts.count == 5, !parts[2].isEmpty, !parts[3].isEmpty else { return false }
            return parts[4].count == 43 && parts[4].allSatisfy(cryptAlphabet)
        default:
            return false
        }
    }

    /// A new bcrypt hash of `password` (`$2b$`, cost 12 unless given).
    public static func hash(_ password: String, cost: Int = 12) -> String? {
        var setting = [CChar](repeating: 0, count: Int(ccrypt_gensalt_output_size()))
        guard ccrypt_gensalt("$2b$", UInt(cost), &setting, Int32(setting.count)) == 0 else { return nil }
        return crypt(password, setting: string(from: setting))
    }

    /// Whether `password` matches `hash`. A hash of an unaccepted method never matches. The final comparison is
    /// constant-time, so the time taken says nothing about how much of the hash matched.
    public static func verify(_ password: String, hash: String) -> Bool {
        guard isAcceptedHash(hash), !password.utf8.contains(0), let computed = crypt(password, setting: hash) else { return false }
        return ConstantTime.equals(computed.utf8, Array(hash.utf8))
    }

    static func crypt(_ password: String, setting: String) -> String? {
        guard !password.utf8.contains(0) else { return nil }
        var out = [CChar](repeating: 0, count: Int(ccrypt_output_size()))
        guard ccrypt_hash(password, setting, &out, out.count) == 0 else { return nil }
        return string(from: out)
    }

    /// 24 random base64url characters (for decoy hashes).
    static func randomSecret() -> String {
        Base64URL.encode(randomBytes(18))
    }

    /// The NUL-terminated C string in `buffer`.
    static func string(from buffer: [CChar]) -> String {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
