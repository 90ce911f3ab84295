import GatewayTokens
import Testing

@testable import GatewaySessions
@testable import GatewayTokenService

/// What a replica signs with, publishes and trusts at a given moment, from the keys of a shared store (DESIGN §9).
@Suite struct FleetKeysTests {
    private func stored(_ key: SigningKey, activatesAt: Double, supersededAt: Double?) -> PostgresSigningKeyStore.StoredKey {
        PostgresSigningKeyStore.StoredKey(key: key, createdAt: activatesAt, activatesAt: activatesAt, supersededAt: supersededAt)
    }

    private func material(_ keys: [PostgresSigningKeyStore.StoredKey], now: Double) -> FleetKeys.Material {
        FleetKeys.material(keys, issuer: "https://login.example.com", audience: "api", retention: 60, now: now)
    }

    @Test func aPendingKeyIsPublishedAndTrustedButSignsOnlyFromItsActivation() throws {
        let old = try SigningKey.generate(.ES256)
        let new = try SigningKey.generate(.EdDSA)
        let keys = [stored(old, activatesAt: 0, supersededAt: 100), stored(new, activatesAt: 100, supersededAt: nil)]

        let before = material(keys, now: 50)
        #expect(before.signing.kid == old.kid)
        #expect(Set(before.published.map(\.kid)) == [old.kid, new.kid])
        #expect(Set(before.policy.keys.compactMap(\.kid)) == [old.kid, new.kid])
        // The new key's algorithm is trusted before any token of it exists.
        #expect(before.policy.algorithms == [.ES256, .EdDSA])
        #expect(before.jwks.contains(new.kid) && before.jwks.contains(old.kid))
        #expect(before.nextChange == 100)

        let after = material(keys, now: 100)
        #expect(after.signing.kid == new.kid)
        // The old key stays published until its last token has expired (retention after it stopped signing).
        #expect(Set(after.published.map(\.kid)) == [old.kid, new.kid])
        #expect(after.nextChange == 160)
        #expect(after.fingerprint != before.fingerprint)

        let later = material(keys, now: 160)
        #expect(later.signing.kid == new.kid)
        #expect(later.published.map(\.kid) == [new.kid])
        #expect(later.policy.algorithms == [.EdDSA])
        #expect(later.nextChange == nil)
    }

    @Test func theFirstKeySignsAtOnceAndAloneIsStable() throws {
        let only = try SigningKey.generate(.ES256)
        let m = material([stored(only, activatesAt: 10, supersededAt: nil)], now: 10)
        #expect(m.signing.kid == only.kid)
        #expect(m.published.map(\.kid) == [only.kid])
        #expect(m.nextChange == nil)
        #expect(m.fingerprint == [only.kid, only.kid])
    }
}
