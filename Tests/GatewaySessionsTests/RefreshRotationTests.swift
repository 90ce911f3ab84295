import Testing

@testable import GatewaySessions

@Suite struct RefreshRotationTests {
    let policy = RefreshPolicy(absoluteLifetime: 604_800, idleLifetime: 86_400, reuseGrace: 10)
    let t0 = 1_767_225_600.0

    var session: SessionRecord { SessionRecord(id: "s1", subject: "alice", scopes: ["read"], clientID: "portcullis", createdAt: t0) }

    @Test func activeTokenRotatesAndRestartsTheIdleClock() {
        let token = RefreshTokenRecord(hash: [1], sessionID: "s1")
        guard
            case .rotate(let refreshed) = RefreshDecision.decide(
                token: token, session: session, clientID: nil, now: t0 + 100, policy: policy)
        else {
            Issue.record("expected rotate")
            return
        }
        #expect(refreshed.lastRefreshedAt == t0 + 100)
        #expect(refreshed.createdAt == t0)  // the absolute lifetime never moves
    }

    @Test func retiredTokenWithinGraceReplaysAfterGraceIsReuse() {
        let token = RefreshTokenRecord(hash: [1], sessionID: "s1", state: .retired(at: t0 + 100, successor: [9, 9]))
        #expect(
            RefreshDecision.decide(token: token, session: session, clientID: nil, now: t0 + 110, policy: policy)
                == .replay(sealedSuccessor: [9, 9]))
        #expect(
            RefreshDecision.decide(token: token, session: session, clientID: nil, now: t0 + 110.5, policy: policy)
                == .reuseDetected(sessionID: "s1"))
    }

    @Test func lifetimesAndRevocation() {
        let token = RefreshTokenRecord(hash: [1], sessionID: "s1")
        #expect(
            RefreshDecision.decide(token: token, session: session, clientID: nil, now: t0 + 604_800, policy: policy)
                == .invalid(.sessionExpired))
        #expect(
            RefreshDecision.decide(token: token, session: session, clientID: nil, now: t0 + 86_400, policy: policy)
                == .invalid(.sessionIdle))
        var idleButFresh = session
        idleButFresh.lastRefreshedAt = t0 + 86_000
        guard case .rotate = RefreshDecision.decide(token: token, session: idleButFresh, clientID: nil, now: t0 + 86_400, policy: policy)
        else {
            Issue.record("a refresh restarts the idle clock")
            return
        }
        var revoked = session
        revoked.revokedAt = t0 + 1
        #expect(
            RefreshDecision.decide(token: token, session: revoked, clientID: nil, now: t0 + 2, policy: policy) == .invalid(.sessionRevoked))
        let retired = RefreshTokenRecord(hash: [1], sessionID: "s1", state: .retired(at: t0, successor: []))
        #expect(
            RefreshDecision.decide(token: retired, session: revoked, clientID: nil, now: t0 + 1, policy: policy)
                == .invalid(.sessionRevoked))
    }

    @Test func unknownOrMismatched() {
        #expect(RefreshDecision.decide(token: nil, session: session, clientID: nil, now: t0, policy: policy) == .invalid(.unknownToken))
        let other = RefreshTokenRecord(hash: [1], sessionID: "s2")
        #expect(RefreshDecision.decide(token: other, session: session, clientID: nil, now: t0, policy: policy) == .invalid(.unknownToken))
        let token = RefreshTokenRecord(hash: [1], sessionID: "s1")
        #expect(
            RefreshDecision.decide(token: token, session: session, clientID: "other-app", now: t0, policy: policy)
                == .invalid(.clientMismatch))
    }

    @Test func refreshTokensAreOpaqueAndHashed() {
        let a = RefreshToken.generate()
        let b = RefreshToken.generate()
        #expect(a != b)
        #expect(a.hasPrefix("prt_") && RefreshToken.isWellFormed(a))
        #expect(!RefreshToken.isWellFormed("prt_short") && !RefreshToken.isWellFormed(String(a.dropFirst(4))))
        #expect(RefreshToken.hash(a).count == 32 && RefreshToken.hash(a) != RefreshToken.hash(b))
    }

    @Test func successorOpensOnlyWithTheRetiredToken() throws {
        let retired = RefreshToken.generate()
        let sealed = try SuccessorSeal.seal(Array(#"{"access_token":"x"}"#.utf8), under: retired)
        #expect(SuccessorSeal.open(sealed, with: retired) == Array(#"{"access_token":"x"}"#.utf8))
        #expect(SuccessorSeal.open(sealed, with: RefreshToken.generate()) == nil)
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        #expect(SuccessorSeal.open(tampered, with: retired) == nil)
    }
}
