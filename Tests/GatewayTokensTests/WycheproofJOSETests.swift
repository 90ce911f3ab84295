import GatewayJSON
import Testing

@testable import GatewayTokens

/// Wycheproof `json_web_signature_test.json` and `json_web_key_test.json`: every case through the JWS layer that
/// `TokenVerifier` uses (key set from the group's JWK, kid selection, alg pinning, strict base64url and header
/// policy), with the strict answers pinned in `strictRejects` / `strictAccepts` below. The payloads are not JWTs, so
/// every case is additionally run through the full `TokenVerifier`, which must reject all of them.
@Suite struct WycheproofJOSETests {
    /// tcIds where the strict answer differs from Wycheproof's: reject these "valid" ones…
    static let strictRejects: Set<Int> = [259, 264, 268, 272, 320, 325, 346, 350, 347, 351, 372, 373]
    /// …and accept these "invalid" ones (byte-identical to the valid tcId 357).
    static let strictAccepts: Set<Int> = [367, 370]

    struct Counts {
        var accepted = 0
        var rejected = 0
        var total: Int { accepted + rejected }
    }

    func run(_ file: String, strictRejects: Set<Int> = [], strictAccepts: Set<Int> = []) throws -> Counts {
        let document = try Vectors.json(file)
        guard case .array(let groups)? = document["testGroups"] else {
            Issue.record("\(file): no testGroups")
            return Counts()
        }
        var counts = Counts()
        for group in groups {
            guard case .array(let tests)? = group["tests"] else { continue }
            // The verification key: the public JWK (or key set) when given, else the (symmetric) private one.
            let keyValue = group["public"] ?? group["private"] ?? .null
            let document: [UInt8]
            if keyValue["keys"] != nil {
                document = Array(JSONWriter.string(keyValue).utf8)
            } else {
                document = jwksDocument([keyValue])
            }
            let loaded = try VerificationKey.jwks(document, allowedAlgorithms: Set(JWSAlgorithm.allCases))
            let table = KeyTable(loaded.keys)
            let policy = IssuerPolicy(issuer: "joe", keys: loaded.keys, algorithms: Set(JWSAlgorithm.allCases), tokenTypes: [])
            let fullVerifier = TokenVerifier(issuers: [policy])

            for test in tests {
                let tcId = test["tcId"]?.int ?? -1
                // JSON-serialised JWS (an object) is presented as its text: never a compact token.
                let jws: String = test["jws"]?.stringValue ?? JSONWriter.string(test["jws"] ?? .null)
                var shouldAccept = test["result"]?.stringValue == "valid"
                if strictRejects.contains(tcId) { shouldAccept = false }
                if strictAccepts.contains(tcId) { shouldAccept = true }

                let result = Array(jws.utf8).withUnsafeBytes { verifyJWS($0, keys: table, algorithms: Set(JWSAlgorithm.allCases)) }
                switch result {
                case .success:
                    #expect(shouldAccept, "\(file) tcId \(tcId) (\(test["comment"]?.stringValue ?? "")) accepted, must be rejected")
                    counts.accepted += 1
                case .failure(let rejection):
                    #expect(!shouldAccept, "\(file) tcId \(tcId) (\(test["comment"]?.stringValue ?? "")) rejected: \(rejection.reason)")
                    counts.rejected += 1
                }
                // Not one of these is an access token.
                #expect(T.reason(jws, verifier: fullVerifier, now: T.now) != "ok", "\(file) tcId \(tcId)")
            }
        }
        return counts
    }

    @Test func jsonWebSignature() throws {
        let counts = try run("json_web_signature_test", strictRejects: Self.strictRejects, strictAccepts: Self.strictAccepts)
        #expect(counts.total == 401)
        // 46 valid − 12 strict rejects + 2 strict accepts.
        #expect(counts.accepted == 36)
    }

    @Test func jsonWebKey() throws {
        let counts = try run("json_web_key_test")
        #expect(counts.total == 26)
        #expect(counts.accepted == 5)
    }

    @Test func jsonWebKeySkipReasons() throws {
        // Each invalid key set loads without throwing, and the offending key is skipped with a reason.
        let document = try Vectors.json("json_web_key_test")
        guard case .array(let groups)? = document["testGroups"] else { return }
        var skippedTotal = 0
        for group in groups {
            let keySet = group["public"] ?? group["private"] ?? .null
            let result = try VerificationKey.jwks(Array(JSONWriter.string(keySet).utf8), allowedAlgorithms: Set(JWSAlgorithm.allCases))
            let valid = (group["tests"]?.arrayValue ?? []).contains { $0["result"]?.stringValue == "valid" }
            if !valid {
                #expect(!result.skipped.isEmpty, "\(group["comment"]?.stringValue ?? "?"): nothing skipped")
                skippedTotal += result.skipped.count
            } else {
                #expect(!result.keys.isEmpty)
            }
        }
        #expect(skippedTotal >= 16)
    }
}
