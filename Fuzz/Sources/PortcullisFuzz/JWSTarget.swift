import Crypto
import GatewayJSON
import _CryptoExtras

@testable import GatewayTokens

/// The JWS/JWT parser and verifier with a fixed key table (HS256, ES256, RS256, PS256, EdDSA under one issuer,
/// ES256 alone under another). Selector byte:
/// - even: the rest is a token exactly as it would follow `Bearer `;
/// - odd: the rest is `header JSON 0x00 payload JSON`, signed by the signer the next byte picks (trusted keys and
///   attacks), so the fuzzer reaches the claim checks behind a valid signature.
/// Invariants: a token verifies only if one of the trusted keys signed exactly its signing input under the header's
/// `alg` (checked with swift-crypto directly); what verifies is unexpired, of a known issuer, for the audience.
let jwsTarget = FuzzTarget("jws", "GatewayTokens CompactJWS + TokenVerifier with a fixed key table", setUp: { _ = FuzzKeys.verifier }) {
    bytes in
    var input = FuzzInput(bytes)
    let selector = input.takeByte()
    let verifier = FuzzKeys.verifier
    let token: [UInt8]
    var signer: FuzzKeys.Signer? = nil
    if selector & 1 == 0 {
        token = input.array
    } else {
        let chosen = FuzzKeys.Signer.allCases[Int(input.takeByte()) % FuzzKeys.Signer.allCases.count]
        signer = chosen
        let rest = input.array
        let split = rest.firstIndex(of: 0) ?? rest.count
        let header = Base64URL.encode(rest[..<split])
        let payload = Base64URL.encode(rest[min(split + 1, rest.count)...])
        let signingInput = Array("\(header).\(payload)".utf8)
        // The verifier reads both as JSON objects before it looks at the signature: only then is signing (an RSA
        // signature costs more than everything else in an input) worth it.
        let signature: [UInt8]
        if case .object? = try? JSONParser.parse(rest[..<split], limits: .token),
            case .object? = try? JSONParser.parse(rest[min(split + 1, rest.count)...], limits: .token)
        {
            signature = chosen.sign(signingInput)
        } else {
            signature = [UInt8](repeating: 0, count: 64)
        }
        token = signingInput + Array(".".utf8) + Array(Base64URL.encode(signature).utf8)
    }

    let result = token.withUnsafeBytes { verifier.verify($0, now: FuzzKeys.now) }
    let issuerGuess = token.withUnsafeBytes { verifier.unverifiedIssuer(of: $0) }
    // The JWS layer alone, with every key of the main issuer (as the conformance tests use it).
    let jws = token.withUnsafeBytes {
        verifyJWS($0, keys: KeyTable(Array(jwsKeys)), algorithms: Set(JWSAlgorithm.allCases))
    }
    if case .success = jws { requireSignedByTrustedKey(token, what: "verifyJWS") }

    guard case .success(let verified) = result else { return }
    if let signer { require(signer.trusted, "a token signed by the untrusted signer \(signer) verified") }
    requireSignedByTrustedKey(token, what: "TokenVerifier")
    require(issuerGuess == verified.issuer, "unverifiedIssuer \(String(describing: issuerGuess)) != verified \(verified.issuer)")
    require(verified.issuer == FuzzKeys.issuer || verified.issuer == FuzzKeys.singleKeyIssuer, "unknown issuer \(verified.issuer) verified")
    require(verified.expiresAt > FuzzKeys.now - verifier.leeway, "expired token verified (exp \(verified.expiresAt))")
    if let nbf = verified.notBefore { require(nbf <= FuzzKeys.now + verifier.leeway, "token not yet valid verified (nbf \(nbf))") }
    if verified.issuer == FuzzKeys.issuer {
        require(verified.audiences.contains(FuzzKeys.audience), "audience \(verified.audiences) verified for \(FuzzKeys.audience)")
    } else {
        require(verified.tokenID != nil, "required claim jti missing from a verified token")
    }
    require(verified.scopes.allSatisfy { !$0.isEmpty && !$0.contains(" ") }, "scope list \(verified.scopes) has empty or spaced entries")
}

/// The main issuer's keys for `verifyJWS` (built once).
private let jwsKeys: [VerificationKey] = [
    try! VerificationKey.hmac(secret: FuzzKeys.hs256Secret, algorithm: .HS256, kid: "hs"),
    VerificationKey.ec256(FuzzKeys.p256.publicKey, kid: "es"),
    try! VerificationKey.publicKeyPEM(FuzzKeys.rsa.publicKey.pemRepresentation, algorithm: .RS256, kid: "rs"),
    try! VerificationKey.ed25519(raw: Array(FuzzKeys.ed25519.publicKey.rawRepresentation), kid: "ed"),
]

/// The oracle: split the token by hand, read `alg` with the JSON parser, check the signature with swift-crypto.
private func requireSignedByTrustedKey(_ token: [UInt8], what: String) {
    let parts = token.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
    require(parts.count == 3, "\(what) accepted a token with \(parts.count) parts")
    guard parts.count == 3, let headerBytes = Base64URL.decode(String(decoding: parts[0], as: UTF8.self)),
        let signature = Base64URL.decode(String(decoding: parts[2], as: UTF8.self))
    else {
        require(false, "\(what) accepted a token whose header or signature is not base64url")
        return
    }
    // Exactly one encoding per byte sequence: what verified must re-encode to the same text.
    require(Base64URL.encode(signature).utf8.elementsEqual(parts[2]), "\(what) accepted a non-canonical signature encoding")
    guard case .object(let header)? = try? JSONParser.parse(headerBytes), case .string(let alg)? = header["alg"] else {
        require(false, "\(what) accepted a token whose header has no string alg")
        return
    }
    let signingInput = Array(token[..<(parts[0].count + 1 + parts[1].count)])
    require(
        FuzzKeys.trustedSignatureIsValid(algorithm: alg, signingInput: signingInput, signature: signature),
        "\(what) accepted a token (alg \(alg)) that no trusted key signed: \(String(decoding: token, as: UTF8.self))")
}
