import GatewayJSON

@testable import GatewayTokens

/// What a remote key-set fetch brings in (DESIGN §4 remote key sets): JWKS documents, issuer metadata, the
/// `Cache-Control` / `Age` that decide freshness, and the PEM / DER key parsers behind key files. Selector byte:
/// 0 JWKS, 1 metadata, 2 cache headers, 3 PEM, 4 DER SubjectPublicKeyInfo.
/// Invariants: every loaded public key republishes as a JWK that loads back to the same key (same thumbprint,
/// algorithm and kid); a metadata key-set URL is https or loopback; a freshness lifetime is finite and not negative.
let keySetTarget = FuzzTarget("keyset", "GatewayTokens JWKS, issuer metadata, Cache-Control, PEM and DER keys") { bytes in
    var input = FuzzInput(bytes)
    switch input.takeByte() % 5 {
    case 0:
        guard let result = try? VerificationKey.jwks(input.array, allowedAlgorithms: Set(JWSAlgorithm.allCases)) else { return }
        for key in result.keys { requireRepublishes(key) }
    case 1:
        guard let url = try? IssuerMetadata.jwksURI(from: input.array, issuer: "https://issuer.fuzz") else { return }
        require(url.isAllowedForKeys, "metadata gave the key-set URL \(url), which is neither https nor loopback")
        require(RemoteURL(url.description) == url, "key-set URL \(url) does not parse back to itself")
    case 2:
        let lines = input.parts(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
        let age = lines.first { $0.hasPrefix("age:") }.map { String($0.dropFirst(4)) }
        let lifetime = CacheControl.freshnessLifetime(cacheControl: lines.filter { !$0.hasPrefix("age:") }, age: age)
        if let lifetime { require(lifetime.isFinite && lifetime >= 0, "freshness lifetime \(lifetime)") }
    case 3:
        var rest = input
        let algorithm = JWSAlgorithm.allCases[Int(rest.takeByte()) % JWSAlgorithm.allCases.count]
        guard let key = try? VerificationKey.publicKeyPEM(rest.string, algorithm: algorithm) else { return }
        require(key.algorithm == algorithm, "PEM key pinned to \(key.algorithm), asked for \(algorithm)")
        requireRepublishes(key)
    default:
        var rest = input
        let algorithm = JWSAlgorithm.allCases[Int(rest.takeByte()) % JWSAlgorithm.allCases.count]
        guard let key = try? VerificationKey.fromSPKI(rest.array, algorithm: algorithm, kid: nil) else { return }
        require(key.algorithm == algorithm, "DER key pinned to \(key.algorithm), asked for \(algorithm)")
        requireRepublishes(key)
    }
}

/// A published key (the token service's JWKS, RFC 7638 thumbprints) must load back as the same key.
private func requireRepublishes(_ key: VerificationKey) {
    guard let jwk = key.publicJWK else {
        require(key.algorithm.isSymmetric, "an asymmetric key without a public JWK")
        return
    }
    let document = Array(JSONWriter.string(.object(JSONObject([("keys", .array([.object(jwk)]))]))).utf8)
    guard let again = try? VerificationKey.jwks(document, allowedAlgorithms: [key.algorithm]), again.keys.count == 1 else {
        require(false, "the published JWK of a loaded key does not load: \(String(decoding: document, as: UTF8.self))")
        return
    }
    let reloaded = again.keys[0]
    require(reloaded.thumbprint == key.thumbprint, "thumbprint changed through the published JWK")
    require(reloaded.algorithm == key.algorithm && reloaded.kid == key.kid, "algorithm or kid changed through the published JWK")
}
