import GatewayJSON
import GatewayTokens

/// The difference between two key sets, by kid and key material (a key replaced under the same kid is both removed
/// and added), for the rotation log line and for deciding whether cached tokens must go.
struct KeySetChange {
    struct Identity: Hashable {
        var kid: String?
        var thumbprint: String?
        var algorithm: JWSAlgorithm
    }

    var added: [Identity]
    var removed: [Identity]

    init(old: [VerificationKey], new: [VerificationKey]) {
        let before = old.map { Identity(kid: $0.kid, thumbprint: $0.thumbprint, algorithm: $0.algorithm) }
        let after = new.map { Identity(kid: $0.kid, thumbprint: $0.thumbprint, algorithm: $0.algorithm) }
        let beforeSet = Set(before)
        let afterSet = Set(after)
        added = after.filter { !beforeSet.contains($0) }
        removed = before.filter { !afterSet.contains($0) }
    }

    var isEmpty: Bool { added.isEmpty && removed.isEmpty }

    /// `: added "k2" (ES256), removed "k1" (RS256)` — kids escaped, never key material.
    var summary: String {
        func list(_ keys: [Identity]) -> String {
            keys.map { "\($0.kid.map(JSONWriter.quoted) ?? "(no kid)") (\($0.algorithm.rawValue))" }.joined(separator: ", ")
        }
        var parts: [String] = []
        if !added.isEmpty { parts.append("added \(list(added))") }
        if !removed.isEmpty { parts.append("removed \(list(removed))") }
        return parts.isEmpty ? "" : ": " + parts.joined(separator: "; ")
    }
}
