import GatewayJSON

/// What the gateway accepts from one issuer.
public struct IssuerPolicy: Sendable {
    /// Exact (byte-wise) match against the token's `iss`.
    public var issuer: String
    public var keys: [VerificationKey]
    /// Allow-list: the header alg must be in it AND equal the chosen key's pinned alg.
    public var algorithms: Set<JWSAlgorithm>
    /// Empty: no audience check (and `aud` not required).
    public var audiences: [String]
    /// Accepted `typ` header values, compared ASCII-case-insensitively. Empty: `typ` is not checked.
    public var tokenTypes: [String]
    /// Required in addition to iss, sub, exp (and aud when `audiences` is non-empty). A member whose value is
    /// JSON null counts as missing.
    public var requiredClaims: [String]

    public init(
        issuer: String, keys: [VerificationKey], algorithms: Set<JWSAlgorithm>, audiences: [String] = [],
        tokenTypes: [String] = ["at+jwt", "application/at+jwt"], requiredClaims: [String] = []
    ) {
        self.issuer = issuer
        self.keys = keys
        self.algorithms = algorithms
        self.audiences = audiences
        self.tokenTypes = tokenTypes
        self.requiredClaims = requiredClaims
    }
}

/// Synchronous, allocation-light JWT verification over an immutable key table built at init.
public struct TokenVerifier: Sendable {
    struct Issuer: Sendable {
        var policy: IssuerPolicy
        var keys: KeyTable
        /// Lower-cased accepted types.
        var tokenTypes: [[UInt8]]
        /// `policy.algorithms` as a bit set.
        var algorithmMask: UInt16
    }

    private let issuers: [String: Issuer]
    /// Depth 32; size follows `maxTokenBytes` (never below the 8 KiB of `JSONLimits.token`).
    private let payloadLimits: JSONLimits
    public let leeway: Double
    public let maxTokenBytes: Int

    /// If two policies name the same issuer, the first one is used.
    public init(issuers: [IssuerPolicy], leeway: Double = 30, maxTokenBytes: Int = 8192) {
        var table: [String: Issuer] = [:]
        for policy in issuers where table[policy.issuer] == nil {
            table[policy.issuer] = Issuer(
                policy: policy, keys: KeyTable(policy.keys), tokenTypes: policy.tokenTypes.map { asciiLowercased(Array($0.utf8)) },
                algorithmMask: JWSAlgorithm.mask(policy.algorithms))
        }
        self.issuers = table
        self.leeway = leeway.isFinite && leeway >= 0 ? leeway : 0
        self.maxTokenBytes = max(0, maxTokenBytes)
        self.payloadLimits = JSONLimits(maxDepth: JSONLimits.token.maxDepth, maxBytes: max(JSONLimits.token.maxBytes, self.maxTokenBytes))
    }

    public func verify(_ token: String, now: Double) -> Result<VerifiedToken, TokenRejection> {
        var token = token
        return token.withUTF8 { verify(UnsafeRawBufferPointer($0), now: now) }
    }

    /// `token` is the compact JWS exactly as received (the bytes after "Bearer ").
    public func verify(_ token: UnsafeRawBufferPointer, now: Double) -> Result<VerifiedToken, TokenRejection> {
        guard token.count <= maxTokenBytes, token.count > 0 else { return .failure(.malformed) }
        return withUnsafeTemporaryAllocation(byteCount: token.count, alignment: 1) { scratch in
            verify(token, scratch: scratch, now: now)
        }
    }

    private func verify(
        _ token: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer, now: Double
    )
        -> Result<VerifiedToken, TokenRejection>
    {
        let decoded: CompactJWS.Decoded
        switch CompactJWS.decode(token, scratch: scratch) {
        case .success(let d): decoded = d
        case .failure(let rejection): return .failure(rejection)
        }
        guard case .object(let claims)? = try? JSONParser.parse(decoded.payload, limits: payloadLimits) else {
            return .failure(.malformed)
        }
        // The issuer picks the key set; the claim is read before the signature check, and only used as a map key.
        guard let issValue = claims["iss"] else { return .failure(TokenRejection(.claimsInvalid)) }
        guard case .string(let iss) = issValue else { return .failure(TokenRejection(.claimsInvalid)) }
        guard let issuer = issuers[iss] else { return .failure(TokenRejection(.issuerUnknown)) }

        let header = decoded.header
        guard issuer.algorithmMask & header.algorithm.bit != 0 else { return .failure(TokenRejection(.algorithmNotAllowed)) }
        guard let key = issuer.keys.select(kid: header.kid) else { return .failure(TokenRejection(.keyUnknown)) }
        guard key.algorithm == header.algorithm else { return .failure(TokenRejection(.algorithmNotAllowed)) }
        guard key.verify(signingInput: decoded.signingInput, signature: decoded.signature) else {
            return .failure(TokenRejection(.signatureInvalid))
        }

        if !issuer.tokenTypes.isEmpty {
            guard let typ = header.typ else { return .failure(TokenRejection(.tokenTypeInvalid)) }
            guard issuer.tokenTypes.contains(where: { asciiCaseInsensitiveEquals(typ, lowercased: $0) }) else {
                return .failure(TokenRejection(.tokenTypeInvalid))
            }
        }
        return checkClaims(claims, issuer: iss, policy: issuer.policy, now: now)
    }

    private func checkClaims(
        _ claims: JSONObject, issuer: String, policy: IssuerPolicy, now: Double
    )
        -> Result<VerifiedToken, TokenRejection>
    {
        let invalid = TokenRejection(.claimsInvalid)
        var exp: Double? = nil
        var nbf: Double? = nil
        var iat: Double? = nil
        var sub: String? = nil
        var audiences: [String]? = nil
        var scope: String? = nil
        var scp: [String]? = nil
        var jti: String? = nil
        var sid: String? = nil
        for member in claims.members {
            switch member.name {
            case "exp":
                guard let d = numericDate(member.value) else { return .failure(invalid) }
                exp = d
            case "nbf":
                guard let d = numericDate(member.value) else { return .failure(invalid) }
                nbf = d
            case "iat":
                guard let d = numericDate(member.value) else { return .failure(invalid) }
                iat = d
            case "sub":
                guard case .string(let s) = member.value else { return .failure(invalid) }
                sub = s
            case "aud":
                switch member.value {
                case .string(let s):
                    audiences = [s]
                case .array(let elements):
                    var list: [String] = []
                    list.reserveCapacity(elements.count)
                    for element in elements {
                        guard case .string(let s) = element else { return .failure(invalid) }
                        list.append(s)
                    }
                    audiences = list
                default:
                    return .failure(invalid)
                }
            case "scope":
                guard case .string(let s) = member.value else { return .failure(invalid) }
                scope = s
            case "scp":
                guard case .array(let elements) = member.value else { return .failure(invalid) }
                var list: [String] = []
                list.reserveCapacity(elements.count)
                for element in elements {
                    guard case .string(let s) = element else { return .failure(invalid) }
                    list.append(s)
                }
                scp = list
            case "jti":
                guard case .string(let s) = member.value else { return .failure(invalid) }
                jti = s
            case "sid":
                guard case .string(let s) = member.value else { return .failure(invalid) }
                sid = s
            default:
                break
            }
        }

        guard let exp, let sub else { return .failure(invalid) }
        if !policy.audiences.isEmpty && audiences == nil { return .failure(invalid) }
        for name in policy.requiredClaims {
            guard let value = claims[name], value != .null else { return .failure(invalid) }
        }

        // Valid while now < exp + leeway; rejected when exp <= now - leeway.
        guard exp > now - leeway else { return .failure(TokenRejection(.tokenExpired)) }
        if let nbf, nbf > now + leeway { return .failure(TokenRejection(.tokenNotYetValid)) }
        if let iat, iat > now + leeway { return .failure(invalid) }

        if !policy.audiences.isEmpty {
            guard let audiences, audiences.contains(where: { policy.audiences.contains($0) }) else {
                return .failure(TokenRejection(.audienceMismatch))
            }
        }

        let scopes: [String]
        if let scope {
            scopes = scope.utf8.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true).map {
                String(decoding: $0, as: UTF8.self)
            }
        } else {
            scopes = scp ?? []
        }

        return .success(
            VerifiedToken(
                issuer: issuer, subject: sub, audiences: audiences ?? [], scopes: scopes, expiresAt: exp, notBefore: nbf,
                issuedAt: iat, tokenID: jti, sessionID: sid, claims: claims))
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number, finite, 0 ≤ x ≤ 2^53 (negative zero refused).
@inline(__always)
private func numericDate(_ value: JSONValue) -> Double? {
    guard let d = value.numberValue, d.isFinite, d.sign == .plus, d <= 9_007_199_254_740_992 else { return nil }
    return d
}

@inline(__always)
private func asciiLowercased(_ bytes: [UInt8]) -> [UInt8] {
    bytes.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }
}

/// `string` equals `lowercased` ignoring ASCII case, without allocating.
@inline(__always)
private func asciiCaseInsensitiveEquals(_ string: String, lowercased: [UInt8]) -> Bool {
    var i = 0
    for byte in string.utf8 {
        guard i < lowercased.count else { return false }
        let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
        guard folded == lowercased[i] else { return false }
        i += 1
    }
    return i == lowercased.count
}
