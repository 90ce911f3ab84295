// GatewayTokens: strict, synchronous JOSE/JWT verification for Portcullis (DESIGN §2, §4, §6; RFC 8725).
//
// Entry points
//   VerificationKey.hmac / .publicKeyPEM / .jwks   load keys once, each pinned to exactly one JWSAlgorithm
//   TokenVerifier(issuers:leeway:maxTokenBytes:)   immutable, Sendable; verify(_:now:) is pure and synchronous
//   VerifiedTokenCache(capacity:)                  one per event loop (not Sendable)
//
// Verification order and the reason each step reports
//   1. size ≤ maxTokenBytes, exactly three canonical base64url segments (no '=', no stray bits, nothing outside
//      A–Z a–z 0–9 - _), non-empty header and payload                                       → token_malformed
//   2. header: a JSON object (strict GatewayJSON: no duplicates, BOM, bad UTF-8, depth > 32); `alg` a string,
//      `kid`/`typ` strings if present; `crit`, `b64`, `zip`, `jku`, `jwk`, `x5u`, `x5c`, `enc` absent → token_malformed
//      `alg` not one of JWSAlgorithm (case-sensitive; "none" in any spelling)               → algorithm_not_allowed
//   3. payload: a JSON object                                                               → token_malformed
//   4. `iss` present and a string                                                           → claims_invalid
//      `iss` names a configured issuer (exact bytes)                                        → issuer_unknown
//   5. header alg in the issuer's allow-list                                                → algorithm_not_allowed
//   6. key by kid within that issuer (a single key is used when the token has no kid or the key has none;
//      no kid with several keys, an unknown kid or a kid shared by two keys select nothing) → key_unknown
//   7. header alg == the key's pinned alg                                                   → algorithm_not_allowed
//   8. signature over the received `header.payload` bytes, exact lengths, raw R‖S only    → signature_invalid
//   9. `typ` (ASCII case-insensitive) in the issuer's tokenTypes, when that list is non-empty → token_type_invalid
//  10. claim types (exp/nbf/iat NumericDates 0 ≤ x ≤ 2^53, finite, not -0; iss/sub/jti/sid strings; aud string or
//      array of strings; scope string; scp array of strings) and required claims (exp, sub, aud when audiences
//      are configured, requiredClaims; null counts as missing)                             → claims_invalid
//  11. exp ≤ now − leeway                                                                   → token_expired
//  12. nbf > now + leeway                                                                   → token_not_yet_valid
//  13. iat > now + leeway                                                                   → claims_invalid
//  14. configured audiences and no overlap with `aud`                                       → audience_mismatch
//
// `token_revoked` is defined here for the proxy's session check; this module never returns it.
