import GatewayJSON
import Testing

@testable import GatewayTokens

@Suite struct VerifiedTokenCacheTests {
    func verified(exp: Double = T.now + 300, sub: String = "user-123") -> VerifiedToken {
        VerifiedToken(
            issuer: T.issuer, subject: sub, audiences: [T.audience], scopes: ["read"], expiresAt: exp, notBefore: nil,
            issuedAt: nil, tokenID: "j", sessionID: "s", claims: JSONObject([("sub", .string(sub))]))
    }

    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func hitReturnsTheVerifiedClaims() throws {
        let cache = VerifiedTokenCache(capacity: 16)
        let token = bytes(T.ok(.ES256))
        let result = try token.withUnsafeBytes { T.verifier.verify($0, now: T.now) }.get()
        token.withUnsafeBytes { cache.insert($0, result, now: T.now) }
        #expect(cache.count == 1)
        let hit = token.withUnsafeBytes { cache.lookup($0, now: T.now + 10) }
        #expect(hit == result)
        #expect(hit?.claims["client_id"] == .string("client-1"))
        // A different token (same header and payload, other signature bytes) misses.
        var other = token
        other[other.count - 1] = other[other.count - 1] == UInt8(ascii: "A") ? UInt8(ascii: "Q") : UInt8(ascii: "A")
        #expect(other.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
        // A prefix of the token misses.
        #expect(Array(token.dropLast()).withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
    }

    @Test func expiredEntriesMiss() {
        let cache = VerifiedTokenCache(capacity: 4, leeway: 30)
        let token = bytes("a.b.c")
        token.withUnsafeBytes { cache.insert($0, verified(exp: T.now + 100), now: T.now) }
        // Valid while now < exp + leeway, exactly like the verifier.
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now + 129) } != nil)
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now + 130) } == nil)
        #expect(cache.count == 0)  // the expired entry was dropped
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
        // Inserting an already-expired token is a no-op.
        token.withUnsafeBytes { cache.insert($0, verified(exp: T.now - 31), now: T.now) }
        #expect(cache.count == 0)
        let strict = VerifiedTokenCache(capacity: 4, leeway: 0)
        token.withUnsafeBytes { strict.insert($0, verified(exp: T.now + 1), now: T.now) }
        #expect(token.withUnsafeBytes { strict.lookup($0, now: T.now + 1) } == nil)
    }

    @Test func capacityIsBoundedWithSecondChance() {
        let cache = VerifiedTokenCache(capacity: 8)
        let tokens = (0..<100).map { bytes("token-\($0)") }
        for i in 0..<8 { tokens[i].withUnsafeBytes { cache.insert($0, verified(sub: "u\(i)"), now: T.now) } }
        #expect(cache.count == 8)
        // Touch token 0; the next insert must evict something else.
        #expect(tokens[0].withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "u0")
        tokens[8].withUnsafeBytes { cache.insert($0, verified(sub: "u8"), now: T.now) }
        #expect(cache.count == 8)
        #expect(tokens[0].withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "u0")
        #expect(tokens[8].withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "u8")
        for i in 9..<100 { tokens[i].withUnsafeBytes { cache.insert($0, verified(sub: "u\(i)"), now: T.now) } }
        #expect(cache.count == 8)
        let hits = tokens.indices.filter { i in tokens[i].withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "u\(i)" }
        #expect(hits.count == 8)
        // Every hit returns its own value (no slot mix-ups).
        #expect(hits.contains(99))
    }

    @Test func capacityZeroDisables() {
        let cache = VerifiedTokenCache(capacity: 0)
        let token = bytes("a.b.c")
        token.withUnsafeBytes { cache.insert($0, verified(), now: T.now) }
        #expect(cache.count == 0)
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
        let negative = VerifiedTokenCache(capacity: -5)
        token.withUnsafeBytes { negative.insert($0, verified(), now: T.now) }
        #expect(negative.count == 0)
    }

    @Test func hashCollisionsNeverReturnAnotherTokensClaims() {
        // Every token hashes to the same value: lookups must compare the full bytes.
        let cache = VerifiedTokenCache(capacity: 8, leeway: 30, hashFunction: { _ in 42 })
        let a = bytes("eyJhbGciOiJFUzI1NiJ9.AAAA.aaaa")
        let b = bytes("eyJhbGciOiJFUzI1NiJ9.AAAA.bbbb")
        a.withUnsafeBytes { cache.insert($0, verified(sub: "alice"), now: T.now) }
        #expect(b.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
        #expect(a.withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "alice")
        b.withUnsafeBytes { cache.insert($0, verified(sub: "bob"), now: T.now) }
        #expect(cache.count == 1)
        #expect(a.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
        #expect(b.withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "bob")
        // Equal-length tokens sharing everything but the last byte.
        let c = bytes("eyJhbGciOiJFUzI1NiJ9.AAAA.bbbc")
        #expect(c.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
    }

    @Test func reinsertRefreshesAndRemoveAllClears() {
        let cache = VerifiedTokenCache(capacity: 4)
        let token = bytes("a.b.c")
        token.withUnsafeBytes { cache.insert($0, verified(sub: "one"), now: T.now) }
        token.withUnsafeBytes { cache.insert($0, verified(sub: "two"), now: T.now) }
        #expect(cache.count == 1)
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "two")
        cache.removeAll()
        #expect(cache.count == 0)
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now) } == nil)
        token.withUnsafeBytes { cache.insert($0, verified(sub: "three"), now: T.now) }
        #expect(token.withUnsafeBytes { cache.lookup($0, now: T.now) }?.subject == "three")
    }

    @Test func expiredSlotsAreReused() {
        let cache = VerifiedTokenCache(capacity: 2, leeway: 0)
        let a = bytes("a")
        let b = bytes("b")
        let c = bytes("c")
        a.withUnsafeBytes { cache.insert($0, verified(exp: T.now + 1), now: T.now) }
        b.withUnsafeBytes { cache.insert($0, verified(exp: T.now + 100), now: T.now) }
        #expect(a.withUnsafeBytes { cache.lookup($0, now: T.now + 2) } == nil)  // expired → slot freed
        c.withUnsafeBytes { cache.insert($0, verified(exp: T.now + 100), now: T.now + 2) }
        #expect(cache.count == 2)
        #expect(b.withUnsafeBytes { cache.lookup($0, now: T.now + 2) } != nil)
        #expect(c.withUnsafeBytes { cache.lookup($0, now: T.now + 2) } != nil)
    }
}
