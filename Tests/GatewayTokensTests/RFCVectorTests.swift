import GatewayJSON
import Testing

@testable import GatewayTokens

/// RFC 7515 Appendix A.1–A.5, RFC 7797 §4, RFC 8037 A.4 (`Vectors/rfc_jws_vectors.json`), at the JWS level and
/// through the full JWT verifier.
@Suite struct RFCVectorTests {
    struct Vector {
        var id: String
        var alg: String
        var jwk: JSONValue?
        var compacts: [String]
    }

    static func load() throws -> [Vector] {
        guard case .array(let list) = try Vectors.json("rfc_jws_vectors") else { throw VectorError.shape }
        return list.compactMap { entry in
            guard let id = entry["id"]?.stringValue, let alg = entry["alg"]?.stringValue else { return nil }
            var compacts: [String] = []
            for name in ["compact", "detached_compact", "attached_compact"] {
                if let c = entry[name]?.stringValue { compacts.append(c) }
            }
            let jwk: JSONValue? = entry["jwk"].flatMap { $0 == .null ? nil : $0 }
            return Vector(id: id, alg: alg, jwk: jwk, compacts: compacts)
        }
    }

    enum VectorError: Error { case shape }

    /// What the JWS layer must say for each vector: nil = verifies, else the rejection reason.
    static let expected: [String: String?] = [
        "RFC7515-A.1": nil,
        "RFC7515-A.2": nil,
        "RFC7515-A.3": nil,
        "RFC7515-A.3-DER": "signature_invalid",
        "RFC7515-A.4": "algorithm_not_allowed",  // ES512 is not supported / allowed
        "RFC7515-A.5": "algorithm_not_allowed",  // alg none
        "RFC7797-4.1": nil,  // valid HS256 JWS (payload "$.02" is not a JWT; see the full-verifier test)
        "RFC7797-4.2": "token_malformed",  // b64:false + crit: refused
        "RFC8037-A.4": nil,
    ]

    static func keyTable(_ vector: Vector) -> KeyTable {
        guard let jwk = vector.jwk, let alg = JWSAlgorithm(rawValue: vector.alg),
            let result = try? VerificationKey.jwks(jwksDocument([jwk]), allowedAlgorithms: [alg])
        else { return KeyTable([]) }
        return KeyTable(result.keys)
    }

    @Test func jwsLevel() throws {
        let vectors = try Self.load()
        #expect(vectors.count == 9)
        var checked = 0
        for vector in vectors {
            let expected = try #require(Self.expected[vector.id], "unexpected vector \(vector.id)")
            let algorithms: Set<JWSAlgorithm> = JWSAlgorithm(rawValue: vector.alg).map { [$0] } ?? []
            let table = Self.keyTable(vector)
            if expected == nil { #expect(table.keys.count == 1, "\(vector.id) key must load") }
            for compact in vector.compacts {
                let result = Array(compact.utf8).withUnsafeBytes { verifyJWS($0, keys: table, algorithms: algorithms) }
                switch result {
                case .success:
                    #expect(expected == nil, "\(vector.id) verified but must fail with \(expected ?? "")")
                case .failure(let rejection):
                    #expect(rejection.reason.rawValue == expected, "\(vector.id): \(rejection.reason)")
                }
                checked += 1
            }
        }
        #expect(checked == 10)
    }

    @Test func a1VerifiesOverReceivedHeaderBytesWithCRLF() throws {
        let vector = try #require(try Self.load().first { $0.id == "RFC7515-A.1" })
        let compact = vector.compacts[0]
        let headerBytes = try #require(Base64URL.decode(String(compact.split(separator: ".")[0])))
        #expect(headerBytes.contains(0x0D) && headerBytes.contains(0x0A))
        // Full JWT path: issuer "joe", clock before exp, typ JWT accepted, no audience. The signature verifies; the
        // claim set has no `sub`, so the verifier stops at claims_invalid (after the signature check).
        let policy = IssuerPolicy(issuer: "joe", keys: Self.keyTable(vector).keys, algorithms: [.HS256], tokenTypes: ["JWT"])
        let verifier = TokenVerifier(issuers: [policy])
        #expect(T.reason(compact, verifier: verifier, now: 1_300_819_000) == "claims_invalid")
        #expect(T.reason(compact, verifier: verifier, now: 1_300_819_380 + 31) == "claims_invalid")
        // A re-serialised header (no CR LF) with the same signature fails.
        let parts = compact.split(separator: ".")
        let reserialised = b64u("{\"typ\":\"JWT\",\"alg\":\"HS256\"}") + "." + parts[1] + "." + parts[2]
        #expect(T.reason(reserialised, verifier: verifier, now: 1_300_819_000) == "signature_invalid")
    }

    @Test func everyVectorIsRejectedByTheGateway() throws {
        // None of these is an access token for the gateway (RFC payloads, iss "joe", 2011 expiry, no typ at+jwt).
        for vector in try Self.load() {
            let alg = JWSAlgorithm(rawValue: vector.alg)
            let policy = IssuerPolicy(issuer: "joe", keys: Self.keyTable(vector).keys, algorithms: alg.map { [$0] } ?? [])
            let verifier = TokenVerifier(issuers: [policy])
            for compact in vector.compacts {
                #expect(T.reason(compact, verifier: verifier, now: T.now) != "ok", "\(vector.id)")
            }
        }
    }
}
