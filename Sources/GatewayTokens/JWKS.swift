import Crypto
import GatewayJSON

/// The outcome of loading a JWKS: the usable keys, and every skipped key with the reason (for a log warning).
public struct JWKSLoadResult: Sendable {
    public var keys: [VerificationKey]
    public var skipped: [(kid: String?, reason: String)]

    public init(keys: [VerificationKey], skipped: [(kid: String?, reason: String)]) {
        self.keys = keys
        self.skipped = skipped
    }
}

extension VerificationKey {
    /// A JWKS document (RFC 7517 §5). Keys that are malformed, of unknown `kty`, not for signatures (`use` other
    /// than "sig", `key_ops` without "verify"), carrying private members, RSA < 2048 bits / even modulus / weak
    /// exponent / ROCA modulus, invalid or small-order Ed25519 points, invalid EC points, or whose algorithm is not
    /// in `allowedAlgorithms`, are skipped with a reason; one bad key never drops the others.
    ///
    /// Algorithm pinning: a JWK's `alg` must name an allowed algorithm that fits its key type and curve. A JWK
    /// without `alg` is pinned only if exactly one allowed algorithm fits it (otherwise skipped as ambiguous).
    /// `oct` keys are accepted only when an HS* algorithm is allowed, and only in a set with no asymmetric keys (a
    /// mixed symmetric/asymmetric set is the algorithm-confusion setup, so its `oct` keys are skipped). Keys sharing
    /// a `kid` in the document are all skipped (the kid would be ambiguous).
    ///
    /// Throws only if the document is not a JSON object with a "keys" array.
    public static func jwks(_ data: [UInt8], allowedAlgorithms: Set<JWSAlgorithm>) throws(KeyLoadError) -> JWKSLoadResult {
        let document: JSONValue
        do {
            document = try JSONParser.parse(data, limits: JSONLimits(maxDepth: 16, maxBytes: 1 << 20))
        } catch {
            throw .document("the key set is not valid JSON: \(error.code.rawValue) at \(error.path.jsonPathString)")
        }
        guard case .object(let object) = document, case .array(let entries)? = object["keys"] else {
            throw .document("the key set must be a JSON object with a \"keys\" array")
        }

        var candidates: [(key: VerificationKey, symmetric: Bool)] = []
        var skipped: [(kid: String?, reason: String)] = []
        var hasAsymmetric = false
        for (index, entry) in entries.enumerated() {
            guard case .object(let jwk) = entry else {
                skipped.append((nil, "keys[\(index)]: not a JSON object"))
                continue
            }
            let kid = jwk["kid"]?.stringValue
            if let kty = jwk["kty"]?.stringValue, kty == "RSA" || kty == "EC" || kty == "OKP" { hasAsymmetric = true }
            do {
                let key = try fromJWK(jwk, allowedAlgorithms: allowedAlgorithms)
                candidates.append((key, key.algorithm.isSymmetric))
            } catch {
                skipped.append((kid, "keys[\(index)]: \(error.message)"))
            }
        }

        // A kid that occurs more than once in the document is ambiguous, even if one of its keys was skipped.
        var kidCounts: [String: Int] = [:]
        for entry in entries { if let kid = entry["kid"]?.stringValue { kidCounts[kid, default: 0] += 1 } }
        var keys: [VerificationKey] = []
        for candidate in candidates {
            if candidate.symmetric && hasAsymmetric {
                skipped.append((candidate.key.kid, "oct key in a key set that also holds asymmetric keys"))
            } else if let kid = candidate.key.kid, kidCounts[kid, default: 0] > 1 {
                skipped.append((kid, "duplicate kid"))
            } else {
                keys.append(candidate.key)
            }
        }
        return JWKSLoadResult(keys: keys, skipped: skipped)
    }

    /// One JWK object → a pinned key, or the reason it cannot be used.
    static func fromJWK(_ jwk: JSONObject, allowedAlgorithms: Set<JWSAlgorithm>) throws(KeyLoadError) -> VerificationKey {
        var kid: String? = nil
        if let value = jwk["kid"] {
            guard case .string(let s) = value else { throw .invalid("kid is not a string") }
            kid = s
        }
        guard case .string(let kty)? = jwk["kty"] else { throw .invalid("kty is missing or not a string") }
        if let use = jwk["use"] {
            guard case .string(let u) = use else { throw .invalid("use is not a string") }
            guard u == "sig" else { throw .unsupported("use is \"\(u == "enc" ? "enc" : "other")\", not \"sig\"") }
        }
        if let ops = jwk["key_ops"] {
            guard case .array(let list) = ops, list.allSatisfy({ $0.stringValue != nil }) else {
                throw .invalid("key_ops is not an array of strings")
            }
            guard list.contains(.string("verify")) else { throw .unsupported("key_ops does not include \"verify\"") }
        }

        // The algorithms this key's type (and curve) could be used with.
        let fitting: [JWSAlgorithm]
        var crv: String? = nil
        switch kty {
        case "RSA":
            fitting = [.RS256, .RS384, .RS512, .PS256, .PS384, .PS512]
        case "EC":
            guard case .string(let c)? = jwk["crv"] else { throw .invalid("crv is missing or not a string") }
            crv = c
            switch c {
            case "P-256": fitting = [.ES256]
            case "P-384": fitting = [.ES384]
            default: throw .unsupported("unsupported EC curve")
            }
        case "OKP":
            guard case .string(let c)? = jwk["crv"] else { throw .invalid("crv is missing or not a string") }
            crv = c
            guard c == "Ed25519" else { throw .unsupported("unsupported OKP curve") }
            fitting = [.EdDSA]
        case "oct":
            fitting = [.HS256, .HS384, .HS512]
        default:
            throw .unsupported("unsupported kty")
        }

        let algorithm: JWSAlgorithm
        if let value = jwk["alg"] {
            guard case .string(let name) = value else { throw .invalid("alg is not a string") }
            guard let named = JWSAlgorithm(rawValue: name) else { throw .unsupported("unsupported alg") }
            guard fitting.contains(named) else { throw .mismatch("alg \(named.rawValue) does not fit the key type or curve") }
            guard allowedAlgorithms.contains(named) else { throw .unsupported("alg \(named.rawValue) is not allowed") }
            algorithm = named
        } else {
            let allowedFitting = fitting.filter { allowedAlgorithms.contains($0) }
            if allowedFitting.isEmpty { throw .unsupported("no allowed algorithm fits this key") }
            guard allowedFitting.count == 1 else {
                throw .unsupported("no alg and several allowed algorithms fit this key (ambiguous)")
            }
            algorithm = allowedFitting[0]
        }

        if kty != "oct" {
            for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] where jwk[member] != nil {
                throw .privateKey("the JWK contains private key material")
            }
        }

        func bytes(_ name: String) throws(KeyLoadError) -> [UInt8] {
            guard case .string(let text)? = jwk[name] else { throw .invalid("\(name) is missing or not a string") }
            guard let decoded = Base64URL.decode(text) else { throw .invalid("\(name) is not canonical base64url") }
            return decoded
        }

        switch kty {
        case "RSA":
            return try rsa(n: try bytes("n"), e: try bytes("e"), algorithm: algorithm, kid: kid)
        case "EC":
            let size = crv == "P-256" ? 32 : 48
            let x = try bytes("x")
            let y = try bytes("y")
            guard x.count == size, y.count == size else { throw .invalid("EC coordinates have the wrong length") }
            let point = [0x04] + x + y
            if size == 32 {
                guard let key = try? P256.Signing.PublicKey(x963Representation: point) else {
                    throw .invalid("EC point is not on the curve")
                }
                return ec256(key, kid: kid)
            } else {
                guard let key = try? P384.Signing.PublicKey(x963Representation: point) else {
                    throw .invalid("EC point is not on the curve")
                }
                return ec384(key, kid: kid)
            }
        case "OKP":
            return try ed25519(raw: try bytes("x"), kid: kid)
        default:  // oct
            return try hmac(secret: try bytes("k"), algorithm: algorithm, kid: kid)
        }
    }
}
