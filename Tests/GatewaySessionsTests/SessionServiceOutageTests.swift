import GatewayJSON
import GatewayTokens
import NIOConcurrencyHelpers
import Synchronization
import Testing

@testable import GatewaySessions

/// DESIGN §9 "Database down": a store that cannot be reached makes every token-service path answer 503
/// `temporarily_unavailable` (Retry-After) — including logout and revoke, whose revocation must reach the store for
/// the rest of the fleet — while this process's data path refuses the session at once.
@Suite struct SessionServiceOutageTests {
    /// The memory store, failing every call with `SessionStoreError` while `down`.
    actor FlakyStore: SessionStore {
        let inner = MemorySessionStore()
        var down = false
        var revokeCalls = 0

        func setDown(_ value: Bool) { down = value }

        private func check() throws {
            if down { throw SessionStoreError(.unavailable, "test: the database is down") }
        }

        func create(_ session: SessionRecord, refreshTokenHash: [UInt8]) async throws {
            try check()
            await inner.create(session, refreshTokenHash: refreshTokenHash)
        }

        func lookup(refreshTokenHash: [UInt8]) async throws -> (token: RefreshTokenRecord, session: SessionRecord)? {
            try check()
            return await inner.lookup(refreshTokenHash: refreshTokenHash)
        }

        func rotate(oldHash: [UInt8], at: Double, sealedSuccessor: [UInt8], newHash: [UInt8], session: SessionRecord) async throws -> Bool {
            try check()
            return await inner.rotate(oldHash: oldHash, at: at, sealedSuccessor: sealedSuccessor, newHash: newHash, session: session)
        }

        func revoke(sessionID: String, at: Double) async throws {
            revokeCalls += 1
            try check()
            await inner.revoke(sessionID: sessionID, at: at)
        }

        func revocations(after sequence: Int64, limit: Int) async throws -> [RevocationEntry] {
            try check()
            return await inner.revocations(after: sequence, limit: limit)
        }

        func purge(now: Double, policy: RefreshPolicy, revokedBefore: Double) async throws -> Int {
            try check()
            return await inner.purge(now: now, policy: policy, revokedBefore: revokedBefore)
        }

        func ping() async throws { try check() }

        func close() async {}
    }

    final class Credentials: CredentialVerifier {
        func authenticate(username: String, password: String) async throws(TokenServiceError) -> AuthenticatedUser? {
            AuthenticatedUser(subject: "user-\(username)", scopes: ["read"], claims: JSONObject())
        }
    }

    final class Recorder: Sendable {
        let published = NIOLockedValueBox<[String]>([])
        let logged = Atomic<Int>(0)
    }

    struct Fixture {
        let service: SessionService
        let store: FlakyStore
        let recorder: Recorder
        var published: [String] { recorder.published.withLockedValue { $0 } }
        var logged: Int { recorder.logged.load(ordering: .relaxed) }
    }

    func fixture() throws -> Fixture {
        let key = try SigningKey.generate(.ES256)
        let policy = IssuerPolicy(issuer: "https://gw", keys: [key.verificationKey], algorithms: [.ES256], audiences: ["api"])
        let store = FlakyStore()
        let recorder = Recorder()
        let f = Fixture(
            service: SessionService(
                settings: .init(
                    accessTokenLifetime: 300, refreshPolicy: RefreshPolicy(absoluteLifetime: 3600, idleLifetime: 600, reuseGrace: 0),
                    leeway: 5),
                signer: AccessTokenIssuer(issuer: "https://gw", audience: "api", key: key), store: store, credentials: Credentials(),
                limiter: LoginRateLimiter(limits: .init()), verifier: TokenVerifier(issuers: [policy], leeway: 0),
                onRevoke: { id, _ in recorder.published.withLockedValue { $0.append(id) } }, clock: { 1_767_225_600 },
                onRevocationLogged: { recorder.logged.wrappingAdd(1, ordering: .relaxed) }),
            store: store, recorder: recorder)
        return f
    }

    func login(_ f: Fixture) async throws -> (access: String, refresh: String) {
        let grant = try await f.service.passwordGrant(
            username: "alice", password: "pw", scope: nil, clientID: nil, clientAddress: nil, failureStatus: 401)
        let body = try #require(try JSONParser.parse(grant.body).objectValue)
        return (try #require(body["access_token"]?.stringValue), try #require(body["refresh_token"]?.stringValue))
    }

    @Test func everyPathAnswers503WhileTheStoreIsDown() async throws {
        let f = try fixture()
        let tokens = try await login(f)
        await f.store.setDown(true)
        await #expect(throws: TokenServiceError.storeUnavailable) {
            _ = try await f.service.passwordGrant(
                username: "bob", password: "pw", scope: nil, clientID: nil, clientAddress: nil, failureStatus: 401)
        }
        await #expect(throws: TokenServiceError.storeUnavailable) {
            _ = try await f.service.refreshGrant(refreshToken: tokens.refresh, scope: nil, clientID: nil)
        }
        await #expect(throws: TokenServiceError.storeUnavailable) { try await f.service.revoke(token: tokens.refresh) }
        await #expect(throws: TokenServiceError.storeUnavailable) { try await f.service.revoke(token: tokens.access) }
        await #expect(throws: TokenServiceError.storeUnavailable) { _ = try await f.service.logout(accessToken: tokens.access) }
        #expect(TokenServiceError.storeUnavailable.status == 503 && TokenServiceError.storeUnavailable.retryAfter != nil)
        // This process refused the session at once each time; nothing reached the log.
        #expect(f.published.count == 2)
        #expect(f.logged == 0)
    }

    @Test func aLogoutThatFailedToBeWrittenIsWrittenWhenRetried() async throws {
        let f = try fixture()
        let tokens = try await login(f)
        await f.store.setDown(true)
        await #expect(throws: TokenServiceError.storeUnavailable) { _ = try await f.service.logout(accessToken: tokens.access) }
        #expect(await f.store.revokeCalls == 2)  // one retry within the call
        await f.store.setDown(false)
        // Not refused as "already revoked": the retry writes the revocation.
        #expect(try await f.service.logout(accessToken: tokens.access) == .success("user-alice"))
        #expect(try await f.store.revocations(after: 0, limit: 10).count == 1)
        #expect(f.logged == 1)
        #expect(try await f.service.logout(accessToken: tokens.access) == .failure(TokenRejection(.tokenRevoked)))
    }
}
