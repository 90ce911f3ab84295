import GatewayJSON
import GatewayTokens
import NIOConcurrencyHelpers
import Synchronization
import Testing

@testable import GatewaySessions

/// The token service's logic over the memory store, with a scripted clock and credential check: no HTTP, no threads.
@Suite struct SessionServiceTests {
    /// Accepts alice/secret; counts the checks it was asked to make.
    final class Credentials: CredentialVerifier {
        let checks = Atomic<Int>(0)
        func authenticate(username: String, password: String) async throws(TokenServiceError) -> AuthenticatedUser? {
            checks.wrappingAdd(1, ordering: .relaxed)
            guard username == "alice", password == "secret" else { return nil }
            return AuthenticatedUser(
                subject: "user-alice", scopes: ["read", "write"], claims: JSONObject([("email", .string("a@example.com"))]))
        }
    }

    final class Clock: Sendable {
        let now = NIOLockedValueBox(1_767_225_600.0)
        func advance(_ seconds: Double) { now.withLockedValue { $0 += seconds } }
        func read() -> Double { now.withLockedValue { $0 } }
    }

    final class Revocations: Sendable {
        let published = NIOLockedValueBox<[(String, Double)]>([])
    }

    struct Fixture {
        let service: SessionService
        let clock: Clock
        let credentials: Credentials
        let revocations: Revocations
        let verifier: TokenVerifier
    }

    func fixture(
        grace: Double = 10, absolute: Double = 3600, idle: Double = 600, limits: LoginRateLimiter.Limits = .init()
    ) throws -> Fixture {
        let key = try SigningKey.generate(.ES256)
        let policy = IssuerPolicy(issuer: "https://gw", keys: [key.verificationKey], algorithms: [.ES256], audiences: ["api"])
        let verifier = TokenVerifier(issuers: [policy], leeway: 0)
        let clock = Clock()
        let credentials = Credentials()
        let revocations = Revocations()
        let service = SessionService(
            settings: .init(
                accessTokenLifetime: 300, refreshPolicy: RefreshPolicy(absoluteLifetime: absolute, idleLifetime: idle, reuseGrace: grace),
                leeway: 5),
            signer: AccessTokenIssuer(issuer: "https://gw", audience: "api", key: key), store: MemorySessionStore(),
            credentials: credentials, limiter: LoginRateLimiter(limits: limits), verifier: verifier,
            onRevoke: { id, until in revocations.published.withLockedValue { $0.append((id, until)) } }, clock: { clock.read() })
        return Fixture(service: service, clock: clock, credentials: credentials, revocations: revocations, verifier: verifier)
    }

    func response(_ grant: SessionService.Grant) throws -> JSONObject {
        try #require(try JSONParser.parse(grant.body).objectValue)
    }

    func login(_ f: Fixture, scope: String? = nil, client: String? = nil) async throws -> JSONObject {
        try response(
            try await f.service.passwordGrant(
                username: "alice", password: "secret", scope: scope, clientID: client, clientAddress: "10.0.0.1", failureStatus: 401))
    }

    @Test func loginIssuesAVerifiableAccessTokenAndAnOpaqueRefreshToken() async throws {
        let f = try fixture()
        let tokens = try await login(f, client: "web")
        let access = try #require(tokens["access_token"]?.stringValue)
        let refresh = try #require(tokens["refresh_token"]?.stringValue)
        #expect(RefreshToken.isWellFormed(refresh))
        #expect(tokens["expires_in"] == .number(300) && tokens["token_type"] == .string("Bearer"))
        #expect(tokens["refresh_token_expires_in"] == .number(600))
        let verified = try f.verifier.verify(access, now: f.clock.read()).get()
        #expect(verified.subject == "user-alice" && verified.scopes == ["read", "write"] && verified.sessionID != nil)
        #expect(verified.claims["client_id"] == .string("web") && verified.claims["email"] == .string("a@example.com"))
    }

    @Test func rotationReplayAndReuse() async throws {
        let f = try fixture(grace: 10)
        let first = try await login(f)
        let r0 = try #require(first["refresh_token"]?.stringValue)
        f.clock.advance(1)
        let second = try await f.service.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        // Within the grace: the same bytes again.
        f.clock.advance(5)
        let replay = try await f.service.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        #expect(replay.body == second.body)
        // After it: reuse, the session is revoked and published to the data path.
        f.clock.advance(10)
        await #expect(
            throws: TokenServiceError.invalidGrant("refresh_token_reused", "The refresh token was already used; the session is revoked")
        ) {
            try await f.service.refreshGrant(refreshToken: r0, scope: nil, clientID: nil)
        }
        #expect(f.revocations.published.withLockedValue { $0.map(\.0) } == [second.sessionID])
        let r1 = try #require(try response(second)["refresh_token"]?.stringValue)
        await #expect(throws: TokenServiceError.self) { try await f.service.refreshGrant(refreshToken: r1, scope: nil, clientID: nil) }
    }

    @Test func concurrentRefreshesAllGetTheOneSuccessor() async throws {
        let f = try fixture()
        let r0 = try #require(try await login(f)["refresh_token"]?.stringValue)
        let bodies = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<20 { group.addTask { try await f.service.refreshGrant(refreshToken: r0, scope: nil, clientID: nil).body } }
            return try await group.reduce(into: Set<[UInt8]>()) { $0.insert($1) }
        }
        #expect(bodies.count == 1)
    }

    @Test func failuresAreCountedAndLimitedBeforeThePasswordIsChecked() async throws {
        let f = try fixture(limits: .init(perUsername: 2, perAddress: 100, window: 60))
        for _ in 0..<2 {
            await #expect(throws: TokenServiceError.badCredentials(status: 401)) {
                try await f.service.passwordGrant(
                    username: "alice", password: "nope", scope: nil, clientID: nil, clientAddress: "a", failureStatus: 401)
            }
        }
        let checks = f.credentials.checks.load(ordering: .relaxed)
        await #expect(throws: TokenServiceError.tooManyRequests(retryAfter: 60)) {
            try await f.service.passwordGrant(
                username: "alice", password: "secret", scope: nil, clientID: nil, clientAddress: "a", failureStatus: 401)
        }
        #expect(f.credentials.checks.load(ordering: .relaxed) == checks)
        f.clock.advance(61)
        _ = try await login(f)
    }

    @Test func scopesNarrowOnlyAndBadParametersAreInvalidRequest() async throws {
        let f = try fixture()
        await #expect(throws: TokenServiceError.invalidScope) { try await login(f, scope: "read admin") }
        let tokens = try await login(f, scope: "read")
        #expect(tokens["scope"] == .string("read"))
        let r0 = try #require(tokens["refresh_token"]?.stringValue)
        await #expect(throws: TokenServiceError.invalidScope) {
            try await f.service.refreshGrant(refreshToken: r0, scope: "write", clientID: nil)
        }
        await #expect(throws: TokenServiceError.self) { try await login(f, scope: "read\u{7F}") }
        await #expect(throws: TokenServiceError.self) { try await login(f, client: "has space") }
        await #expect(throws: TokenServiceError.self) { try await login(f, client: String(repeating: "c", count: 129)) }
    }

    @Test func lifetimes() async throws {
        let f = try fixture(absolute: 100, idle: 30)
        var refresh = try #require(try await login(f)["refresh_token"]?.stringValue)
        for _ in 0..<3 {
            f.clock.advance(25)
            refresh = try #require(
                try response(try await f.service.refreshGrant(refreshToken: refresh, scope: nil, clientID: nil))["refresh_token"]?
                    .stringValue)
        }
        f.clock.advance(25)  // 100 s after login: the absolute lifetime ends although the idle clock is fresh
        await #expect(throws: TokenServiceError.invalidGrant("session_expired", "The session has expired")) {
            try await f.service.refreshGrant(refreshToken: refresh, scope: nil, clientID: nil)
        }
        let idle = try #require(try await login(f)["refresh_token"]?.stringValue)
        f.clock.advance(30)
        await #expect(throws: TokenServiceError.invalidGrant("session_idle_expired", "The session expired after inactivity")) {
            try await f.service.refreshGrant(refreshToken: idle, scope: nil, clientID: nil)
        }
    }

    @Test func logoutRevokeAndIntrospection() async throws {
        let f = try fixture()
        let tokens = try await login(f)
        let access = try #require(tokens["access_token"]?.stringValue)
        let refresh = try #require(tokens["refresh_token"]?.stringValue)
        #expect(await f.service.introspect(token: access)["active"] == .bool(true))
        #expect(await f.service.introspect(token: refresh)["token_type"] == .string("refresh_token"))
        #expect(try await f.service.logout(accessToken: access).get() == "user-alice")
        #expect(await f.service.introspect(token: access) == JSONObject([("active", .bool(false))]))
        #expect(await f.service.introspect(token: refresh) == JSONObject([("active", .bool(false))]))
        #expect(try await f.service.logout(accessToken: access) == .failure(TokenRejection(.tokenRevoked)))
        // The published revocation lasts until the last access token of the session is past exp + leeway.
        let (_, until) = try #require(f.revocations.published.withLockedValue { $0.first })
        #expect(until == f.clock.read() + 305)
        // Unknown tokens are ignored.
        try await f.service.revoke(token: "prt_" + String(repeating: "A", count: 43))
        try await f.service.revoke(token: "garbage")
    }
}
