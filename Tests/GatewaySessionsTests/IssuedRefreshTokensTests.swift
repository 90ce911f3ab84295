import GatewayJSON
import GatewayTokens
import NIOConcurrencyHelpers
import Testing

@testable import GatewaySessions

/// A refresh with a token this service issued skips the store's lookup (`IssuedRefreshTokens`), and everything the
/// store decides still holds: two services on one store stand for two replicas of a fleet.
@Suite struct IssuedRefreshTokensTests {
    /// The memory store, counting lookups and rotations.
    actor CountingStore: SessionStore {
        let inner = MemorySessionStore()
        var lookups = 0
        var rotations = 0

        func create(_ session: SessionRecord, refreshTokenHash: [UInt8]) async throws {
            await inner.create(session, refreshTokenHash: refreshTokenHash)
        }

        func lookup(refreshTokenHash: [UInt8]) async throws -> (token: RefreshTokenRecord, session: SessionRecord)? {
            lookups += 1
            return await inner.lookup(refreshTokenHash: refreshTokenHash)
        }

        func rotate(oldHash: [UInt8], at: Double, sealedSuccessor: [UInt8], newHash: [UInt8], session: SessionRecord) async throws -> Bool {
            rotations += 1
            return await inner.rotate(oldHash: oldHash, at: at, sealedSuccessor: sealedSuccessor, newHash: newHash, session: session)
        }

        func revoke(sessionID: String, at: Double) async throws { await inner.revoke(sessionID: sessionID, at: at) }

        func revocations(after sequence: Int64, limit: Int) async throws -> [RevocationEntry] {
            await inner.revocations(after: sequence, limit: limit)
        }

        func purge(now: Double, policy: RefreshPolicy, revokedBefore: Double) async throws -> Int {
            await inner.purge(now: now, policy: policy, revokedBefore: revokedBefore)
        }

        func ping() async throws {}
        func close() async {}
    }

    final class Credentials: CredentialVerifier {
        func authenticate(username: String, password: String) async throws(TokenServiceError) -> AuthenticatedUser? {
            AuthenticatedUser(subject: "user-\(username)", scopes: ["read"], claims: JSONObject())
        }
    }

    final class Clock: Sendable {
        let now = NIOLockedValueBox(1_767_225_600.0)
        func read() -> Double { now.withLockedValue { $0 } }
    }

    struct Fleet {
        let a: SessionService
        let b: SessionService
        let store: CountingStore
        let clock: Clock

        func advance(_ seconds: Double) { clock.now.withLockedValue { $0 += seconds } }
    }

    func fleet(grace: Double = 10) throws -> Fleet {
        let key = try SigningKey.generate(.ES256)
        let policy = IssuerPolicy(issuer: "https://gw", keys: [key.verificationKey], algorithms: [.ES256], audiences: ["api"])
        let store = CountingStore()
        let time = Clock()
        let clock: @Sendable () -> Double = { time.read() }
        func service() -> SessionService {
            SessionService(
                settings: .init(
                    accessTokenLifetime: 300,
                    refreshPolicy: RefreshPolicy(absoluteLifetime: 3600, idleLifetime: 600, reuseGrace: grace), leeway: 5),
                signer: AccessTokenIssuer(issuer: "https://gw", audience: "api", key: key), store: store,
                credentials: Credentials(), limiter: LoginRateLimiter(limits: .init()),
                verifier: TokenVerifier(issuers: [policy], leeway: 0), onRevoke: { _, _ in }, clock: clock)
        }
        return Fleet(a: service(), b: service(), store: store, clock: time)
    }

    func refreshToken(_ grant: SessionService.Grant) throws -> String {
        let body = try #require(try JSONParser.parse(grant.body).objectValue)
        return try #require(body["refresh_token"]?.stringValue)
    }

    func login(_ service: SessionService) async throws -> String {
        try refreshToken(
            try await service.passwordGrant(
                username: "alice", password: "pw", scope: nil, clientID: nil, clientAddress: nil, failureStatus: 401))
    }

    /// A refresh with `token` on `service` is refused because its session is revoked.
    func expectRevoked(_ service: SessionService, _ token: String) async {
        do {
            _ = try await service.refreshGrant(refreshToken: token, scope: nil, clientID: nil)
            Issue.record("a refresh of a revoked session succeeded")
        } catch {
            #expect(error.reason == "session_revoked")
        }
    }

    @Test func aTokenIssuedHereIsRotatedWithoutALookup() async throws {
        let f = try fleet()
        let r0 = try await login(f.a)
        f.advance(1)
        let first = try await f.a.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        let r1 = try refreshToken(first)
        f.advance(1)
        _ = try await f.a.refreshGrant(refreshToken: r1, scope: nil, clientID: nil)
        #expect(await f.store.lookups == 0)
        #expect(await f.store.rotations == 2)
        // A replay of the first token within the grace is the store's to decide: the same answer again.
        let replay = try await f.a.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        #expect(replay.body == first.body)
        #expect(await f.store.lookups == 1)
    }

    @Test func aTokenUsedOnAnotherReplicaIsDecidedByTheStore() async throws {
        let f = try fleet(grace: 10)
        let r0 = try await login(f.a)
        f.advance(1)
        // The client brings the token to replica B, which never saw it: the usual way.
        let onB = try await f.b.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        #expect(await f.store.lookups == 1)
        // Then to replica A, which still keeps its session: the rotation is refused, and within the grace the
        // answer is B's pair again.
        f.advance(1)
        let onA = try await f.a.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        #expect(onA.body == onB.body)
        #expect(await f.store.rotations == 2)
        // After the grace the same token in anyone's hands is reuse: the session is revoked.
        f.advance(20)
        await #expect(throws: TokenServiceError.self) { _ = try await f.a.refreshGrant(refreshToken: r0, scope: nil, clientID: nil) }
        await expectRevoked(f.a, try refreshToken(onB))
    }

    @Test func aSessionRevokedOnAnotherReplicaIsRefused() async throws {
        let f = try fleet()
        let r0 = try await login(f.a)
        let grant = try await f.a.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        try await f.b.revokeSession(grant.sessionID, cause: "logout")
        await expectRevoked(f.a, try refreshToken(grant))
    }

    @Test func concurrentRefreshesOfOneTokenRotateItOnce() async throws {
        let f = try fleet()
        let r0 = try await login(f.a)
        let bodies = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for i in 0..<20 {
                let service = i % 2 == 0 ? f.a : f.b
                group.addTask { try await service.refreshGrant(refreshToken: r0, scope: nil, clientID: nil).body }
            }
            return try await group.reduce(into: [[UInt8]]()) { $0.append($1) }
        }
        #expect(bodies.count == 20)
        #expect(Set(bodies).count == 1)
    }

    @Test func theTableIsBoundedAndUsedOnce() throws {
        let table = IssuedRefreshTokens(capacity: 2)
        let session = SessionRecord(id: "s", subject: "u", scopes: [], clientID: "c", claims: "{}", createdAt: 0)
        table.remember([1], session: session)
        table.remember([2], session: session)
        table.remember([3], session: session)
        #expect(table.count == 2)
        #expect(table.take([3])?.id == "s")
        #expect(table.take([3]) == nil)
        let off = IssuedRefreshTokens(capacity: 0)
        off.remember([1], session: session)
        #expect(off.count == 0)
    }
}
