import GatewayJSON

/// The protected header fields the verifier uses.
struct JOSEHeader: Sendable {
    var algorithm: JWSAlgorithm
    var kid: String?
    var typ: String?
}

/// Parsing of the compact serialisation (RFC 7515 §7.1) under the strict rules of DESIGN §4.
enum CompactJWS {
    /// Positions of the two dots. Every other byte is in the base64url alphabet, each segment length is possible for
    /// unpadded base64url, and header and payload are non-empty. nil otherwise.
    static func split(_ token: UnsafeRawBufferPointer) -> (dot1: Int, dot2: Int)? {
        var dot1 = -1
        var dot2 = -1
        let ok = Base64URL.decodeTable.withUnsafeBufferPointer { table -> Bool in
            for i in 0..<token.count {
                let c = token[i]
                if table[Int(c)] != 0xFF { continue }
                guard c == UInt8(ascii: ".") else { return false }
                if dot1 < 0 {
                    dot1 = i
                } else if dot2 < 0 {
                    dot2 = i
                } else {
                    return false
                }
            }
            return true
        }
        guard ok, dot1 > 0, dot2 > dot1 + 1 else { return nil }
        guard Base64URL.decodedLength(dot1) != nil, Base64URL.decodedLength(dot2 - dot1 - 1) != nil,
            Base64URL.decodedLength(token.count - dot2 - 1) != nil
        else { return nil }
        return (dot1, dot2)
    }

    /// Header members that this verifier refuses to process: extensions (`crit`, RFC 7797 `b64`), compression
    /// (`zip`), key references and embedded keys that must never be followed or trusted, and JWE's `enc`.
    static let refusedHeaderParameters: Set<String> = ["crit", "b64", "zip", "jku", "jwk", "x5u", "x5c", "enc"]

    static func parseHeader(_ bytes: UnsafeRawBufferPointer) -> Result<JOSEHeader, TokenRejection> {
        guard case .object(let object)? = try? JSONParser.parse(bytes, limits: .token) else { return .failure(.malformed) }
        var algName: String? = nil
        var kid: String? = nil
        var typ: String? = nil
        for member in object.members {
            switch member.name {
            case "alg":
                guard case .string(let s) = member.value else { return .failure(.malformed) }
                algName = s
            case "kid":
                guard case .string(let s) = member.value else { return .failure(.malformed) }
                kid = s
            case "typ":
                guard case .string(let s) = member.value else { return .failure(.malformed) }
                typ = s
            default:
                if refusedHeaderParameters.contains(member.name) { return .failure(.malformed) }
            }
        }
        guard let algName else { return .failure(.malformed) }
        // Case-sensitive allow-list match; "none" (in any spelling) is not a JWSAlgorithm.
        guard let algorithm = JWSAlgorithm(rawValue: algName) else { return .failure(TokenRejection(.algorithmNotAllowed)) }
        return .success(JOSEHeader(algorithm: algorithm, kid: kid, typ: typ))
    }

    /// The signature-bearing part of a token, decoded into caller-provided scratch memory.
    struct Decoded {
        var header: JOSEHeader
        /// `header "." payload` exactly as received.
        var signingInput: UnsafeRawBufferPointer
        var payload: UnsafeRawBufferPointer
        var signature: UnsafeRawBufferPointer
    }

    /// Splits, decodes and checks the header. `scratch` must hold at least `token.count` bytes.
    static func decode(_ token: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer) -> Result<Decoded, TokenRejection> {
        guard let (dot1, dot2) = split(token) else { return .failure(.malformed) }
        let headerText = UnsafeRawBufferPointer(rebasing: token[0..<dot1])
        let payloadText = UnsafeRawBufferPointer(rebasing: token[(dot1 + 1)..<dot2])
        let signatureText = UnsafeRawBufferPointer(rebasing: token[(dot2 + 1)...])

        guard let headerLength = Base64URL.decode(headerText, into: scratch) else { return .failure(.malformed) }
        let headerBytes = UnsafeRawBufferPointer(rebasing: scratch[0..<headerLength])
        let header: JOSEHeader
        switch parseHeader(headerBytes) {
        case .success(let h): header = h
        case .failure(let rejection): return .failure(rejection)
        }

        let payloadStart = headerLength
        guard let payloadLength = Base64URL.decode(payloadText, into: UnsafeMutableRawBufferPointer(rebasing: scratch[payloadStart...])),
            payloadLength > 0
        else { return .failure(.malformed) }
        let signatureStart = payloadStart + payloadLength
        guard
            let signatureLength = Base64URL.decode(signatureText, into: UnsafeMutableRawBufferPointer(rebasing: scratch[signatureStart...]))
        else { return .failure(.malformed) }

        return .success(
            Decoded(
                header: header,
                signingInput: UnsafeRawBufferPointer(rebasing: token[0..<dot2]),
                payload: UnsafeRawBufferPointer(rebasing: scratch[payloadStart..<signatureStart]),
                signature: UnsafeRawBufferPointer(rebasing: scratch[signatureStart..<(signatureStart + signatureLength)])
            ))
    }
}

/// The keys of one issuer, indexed for selection by `kid`. There is no "try every key".
struct KeyTable: Sendable {
    let keys: [VerificationKey]
    /// kid → index, for kids that occur exactly once.
    private let byKid: [String: Int]

    init(_ keys: [VerificationKey]) {
        self.keys = keys
        var counts: [String: Int] = [:]
        for key in keys { if let kid = key.kid { counts[kid, default: 0] += 1 } }
        var index: [String: Int] = [:]
        for (i, key) in keys.enumerated() { if let kid = key.kid, counts[kid] == 1 { index[kid] = i } }
        self.byKid = index
    }

    /// A single key is used when the token names no kid, or when the key has none; otherwise the kid must match
    /// exactly one key. A token without kid against several keys selects nothing.
    func select(kid: String?) -> VerificationKey? {
        if keys.count == 1 {
            let key = keys[0]
            if kid == nil || key.kid == nil || key.kid == kid { return key }
            return nil
        }
        guard let kid, let i = byKid[kid] else { return nil }
        return keys[i]
    }
}

/// JWS-level verification (no JWT claim processing): strict structure and header, key chosen by kid from `keys`,
/// header alg in `algorithms` and equal to the key's pinned alg, signature over the received bytes. Used by the
/// conformance tests (RFC 7515 / Wycheproof payloads are not JWTs); `TokenVerifier` runs the same steps.
func verifyJWS(
    _ token: UnsafeRawBufferPointer, keys: KeyTable, algorithms: Set<JWSAlgorithm>, maxTokenBytes: Int = 8192
)
    -> Result<(header: JOSEHeader, payload: [UInt8]), TokenRejection>
{
    guard token.count <= maxTokenBytes, token.count > 0 else { return .failure(.malformed) }
    return withUnsafeTemporaryAllocation(byteCount: token.count, alignment: 1) { scratch in
        let decoded: CompactJWS.Decoded
        switch CompactJWS.decode(token, scratch: scratch) {
        case .success(let d): decoded = d
        case .failure(let rejection): return .failure(rejection)
        }
        guard algorithms.contains(decoded.header.algorithm) else { return .failure(TokenRejection(.algorithmNotAllowed)) }
        guard let key = keys.select(kid: decoded.header.kid) else { return .failure(TokenRejection(.keyUnknown)) }
        guard key.algorithm == decoded.header.algorithm else { return .failure(TokenRejection(.algorithmNotAllowed)) }
        guard key.verify(signingInput: decoded.signingInput, signature: decoded.signature) else {
            return .failure(TokenRejection(.signatureInvalid))
        }
        return .success((decoded.header, Array(decoded.payload)))
    }
}
