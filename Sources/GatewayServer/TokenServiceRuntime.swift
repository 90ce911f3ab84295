import GatewayConfig
import GatewayJSON
import GatewayProxy
import GatewaySessions
import GatewayTokens
import Logging
import NIOCore
import Synchronization

/// The running token service: keys, session store, credential check, the `SessionService`, its HTTP endpoints and
/// the documents it publishes. Revocations fan out to every event loop through `revocations` once the loops exist.
final class TokenServiceRuntime: Sendable {
    let configuration: TokenService
    let sessions: SessionService
    let endpoints: TokenEndpoints
    /// The own issuer's policy, for the data path's verifier.
    let issuerPolicy: IssuerPolicy
    /// JWKS and RFC 8414 metadata, by path.
    let documents: [String: LocalDocument]
    let store: any SessionStore
    let revocations: RevocationFanout
    private let usersVerifier: UsersFileVerifier?
    private let purgeTask = Mutex<Task<Void, Never>?>(nil)

    /// Opens the keys, the store and the users file; nothing is served yet. A reload passes the running runtime as
    /// `previous`: its session store and revocation fan-out carry over (the store configuration cannot change
    /// without a restart), everything else is read anew (keys, users, lifetimes, limits).
    static func start(
        _ service: TokenService, configuration: GatewayConfiguration, credentials upstreamCredentials: (any CredentialVerifier)?,
        metrics: MetricsRegistry, logger: Logger, previous: TokenServiceRuntime? = nil
    ) async throws -> TokenServiceRuntime {
        let now = GatewayServer.wallClock()
        let leeway = Double(configuration.auth.leewaySeconds)
        let retention = Double(service.accessTokenTTLSeconds) + leeway
        let (signingKey, issuerPolicy, jwks) = try TokenServiceKeys.open(service, now: now, retention: retention)

        var usersVerifier: UsersFileVerifier? = nil
        let credentials: any CredentialVerifier
        if let users = try TokenServiceUsers.load(service) {
            let verifier = UsersFileVerifier(users: users, threads: max(1, System.coreCount))
            usersVerifier = verifier
            credentials = verifier
            logger.info("token service: \(users.users.count) user(s) in the users file")
        } else if let upstreamCredentials {
            credentials = upstreamCredentials
        } else {
            throw ConfigErrors([ConfigError(.missingKey, path: "token_service.users_file", "users_file or login_upstream is required")])
        }

        let store = if let previous { previous.store } else { try await SessionStores.open(configuration.store) }
        let revocations = previous?.revocations ?? RevocationFanout()
        let settings = SessionService.Settings(
            accessTokenLifetime: service.accessTokenTTLSeconds,
            refreshPolicy: RefreshPolicy(
                absoluteLifetime: Double(service.refreshTokenTTLSeconds), idleLifetime: Double(service.refreshTokenIdleTTLSeconds),
                reuseGrace: Double(service.refreshReuseGraceSeconds)),
            leeway: leeway)
        let limits = service.loginLimits
        let wanted = LoginRateLimiter.Limits(
            perUsername: limits.perUsername, perAddress: limits.perAddress, window: Double(limits.windowSeconds))
        // A reload keeps the failures counted so far, unless the limits themselves changed.
        let limiter = previous.map(\.sessions.limiter).flatMap { $0.limits == wanted ? $0 : nil } ?? LoginRateLimiter(limits: wanted)
        let sessions = SessionService(
            settings: settings,
            signer: AccessTokenIssuer(issuer: service.issuer, audience: service.audience, key: signingKey),
            store: store, credentials: credentials,
            limiter: limiter,
            verifier: TokenVerifier(issuers: [issuerPolicy], leeway: leeway),
            onRevoke: { sessionID, until in revocations.publish(sessionID, until: until) },
            onEvent: { event in
                switch event {
                case .login(let result): metrics.increment("portcullis_logins_total", [result])
                case .refresh(let result): metrics.increment("portcullis_refreshes_total", [result])
                case .revocation(let cause): metrics.increment("portcullis_revocations_total", [cause])
                }
            },
            clock: GatewayServer.wallClock)

        var documents: [String: LocalDocument] = [:]
        documents["/.well-known/jwks.json"] = LocalDocument(
            contentType: "application/jwk-set+json", body: Array(jwks.utf8), cacheControl: "public, max-age=300")
        let (metadataPath, metadata) = metadataDocument(service, scopes: usersVerifier?.users.allScopes ?? [])
        documents[metadataPath] = LocalDocument(contentType: "application/json", body: metadata, cacheControl: "public, max-age=3600")

        logger.info(
            "token service: issuer \(service.issuer), signing with \(signingKey.algorithm.rawValue) key \(signingKey.kid), \(issuerPolicy.keys.count) key(s) published, store \(configuration.store.kind.rawValue)")
        return TokenServiceRuntime(
            configuration: service, sessions: sessions,
            endpoints: TokenEndpoints(prefix: service.pathPrefix, service: sessions, realm: configuration.auth.realm),
            issuerPolicy: issuerPolicy, documents: documents, store: store, revocations: revocations, usersVerifier: usersVerifier)
    }

    private init(
        configuration: TokenService, sessions: SessionService, endpoints: TokenEndpoints, issuerPolicy: IssuerPolicy,
        documents: [String: LocalDocument], store: any SessionStore, revocations: RevocationFanout, usersVerifier: UsersFileVerifier?
    ) {
        self.configuration = configuration
        self.sessions = sessions
        self.endpoints = endpoints
        self.issuerPolicy = issuerPolicy
        self.documents = documents
        self.store = store
        self.revocations = revocations
        self.usersVerifier = usersVerifier
    }

    /// Connects revocations to the loops, restores the revocations that must survive the restart, and starts the
    /// background work: a store check every 10 s (readiness condition `store`) and the cleanup every minute.
    func attach(_ loops: LoopContexts, readiness: Readiness, logger: Logger) async throws {
        revocations.attach(loops)
        let restored = try await sessions.restoreRevocations()
        if restored > 0 { logger.info("token service: \(restored) recently revoked session(s) restored") }
        readiness.register("store", ready: true)
        let sessions = self.sessions
        let store = self.store
        let task = Task {
            var round = 0
            while !Task.isCancelled {
                do {
                    try await store.ping()
                    readiness.set("store", ready: true)
                } catch {
                    if readiness.notReady.contains("store") == false {
                        logger.error("token service: the session store does not answer: \(error)")
                    }
                    readiness.set("store", ready: false)
                }
                if round % 6 == 0 {
                    do {
                        let removed = try await sessions.purge()
                        if removed > 0 { logger.info("token service: removed \(removed) expired session(s)") }
                    } catch {
                        logger.warning("token service: session cleanup failed: \(error)")
                    }
                }
                round += 1
                try? await Task.sleep(for: .seconds(10))
            }
        }
        purgeTask.withLock { $0 = task }
    }

    /// Stops the background work and the password workers; closes the store unless a newer runtime took it over.
    func shutdown(closingStore: Bool = true) async {
        purgeTask.withLock { $0?.cancel() }
        await usersVerifier?.shutdown()
        if closingStore { await store.close() }
    }

    /// RFC 8414 metadata and the path it is served at: `/.well-known/oauth-authorization-server` followed by the
    /// issuer's own path, if it has one (§3.1).
    static func metadataDocument(_ service: TokenService, scopes: [String]) -> (String, [UInt8]) {
        let (origin, issuerPath) = splitIssuer(service.issuer)
        var object = JSONObject([
            ("issuer", .string(service.issuer)),
            ("token_endpoint", .string(origin + service.pathPrefix + "/token")),
            ("revocation_endpoint", .string(origin + service.pathPrefix + "/revoke")),
            ("jwks_uri", .string(origin + "/.well-known/jwks.json")),
            ("grant_types_supported", .array([.string("password"), .string("refresh_token")])),
            ("response_types_supported", .array([])),
            ("token_endpoint_auth_methods_supported", .array([.string("none")])),
            ("revocation_endpoint_auth_methods_supported", .array([.string("none")])),
        ])
        if !scopes.isEmpty { object["scopes_supported"] = .array(scopes.map(JSONValue.string)) }
        let path = "/.well-known/oauth-authorization-server" + (issuerPath == "/" ? "" : issuerPath)
        return (path, Array((JSONWriter.string(.object(object)) + "\n").utf8))
    }

    /// `https://host:port/path` → (`https://host:port`, `/path`); the path is `/` when absent.
    static func splitIssuer(_ issuer: String) -> (origin: String, path: String) {
        let parts = issuer.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        // ["https:", "", "host:port", "path..."]
        guard parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty else { return (issuer, "/") }
        let rest = issuer[parts[2].startIndex...]
        guard let slash = rest.firstIndex(of: "/") else { return (issuer, "/") }
        var path = String(rest[slash...])
        if path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return (String(issuer[..<slash]), path)
    }
}

/// Carries revocations from the token service to every event loop's `RevokedSessions`. Revocations published before
/// the loops exist are held and applied when they are attached.
final class RevocationFanout: Sendable {
    private struct State {
        var loops: LoopContexts?
        var held: [(String, Double)] = []
    }

    private let state = Mutex(State())

    func attach(_ loops: LoopContexts) {
        let held = state.withLock { state in
            state.loops = loops
            defer { state.held = [] }
            return state.held
        }
        for (sessionID, until) in held { apply(sessionID, until: until, to: loops) }
    }

    func publish(_ sessionID: String, until: Double) {
        let loops = state.withLock { state in
            if state.loops == nil { state.held.append((sessionID, until)) }
            return state.loops
        }
        if let loops { apply(sessionID, until: until, to: loops) }
    }

    private func apply(_ sessionID: String, until: Double, to loops: LoopContexts) {
        let now = GatewayServer.wallClock()
        loops.apply { $0.revocations.insert(sessionID, until: until, now: now) }
    }
}

/// Opens the configured session store.
enum SessionStores {
    static func open(_ store: Store) async throws -> any SessionStore {
        switch store.kind {
        case .memory:
            return MemorySessionStore()
        case .sqlite:
            do {
                return try await SQLiteSessionStore.open(path: store.path)
            } catch {
                throw ConfigErrors([ConfigError(.unreadableFile, path: "store.path", "\(error)")])
            }
        case .postgres:
            guard let postgres = store.postgres else {
                throw ConfigErrors([ConfigError(.missingKey, path: "store.url", "is required")])
            }
            let settings = try PostgresConnectionSettings(postgres)
            do {
                return try await PostgresSessionStore.open(settings)
            } catch {
                // Unreachable, wrong password, missing database, newer schema: `portcullis check` exits 1 naming store.
                throw ConfigErrors([ConfigError(.invalidValue, path: "store.url", "cannot open \(settings): \(error)")])
            }
        }
    }
}

extension UsersFile {
    /// Every scope some user has, sorted (RFC 8414 `scopes_supported`).
    var allScopes: [String] {
        Array(Set(users.values.flatMap(\.scopes))).sorted()
    }
}
