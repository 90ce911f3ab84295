import GatewayConfig
import GatewayControl
import GatewayJSON
import GatewayProxy
import GatewaySessions
import GatewayTokens
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The running token service: keys, session store, credential check, the `SessionService`, its HTTP endpoints and
/// the documents it publishes. Revocations fan out to every event loop through `revocations` once the loops exist;
/// `sync` keeps the loops in step with the store's revocation log (other replicas' revocations) and serves the feed.
package final class TokenServiceRuntime: Sendable {
    package let configuration: TokenService
    package let sessions: SessionService
    package let endpoints: TokenEndpoints
    /// The own issuer's policy, for the data path's verifier.
    package let issuerPolicy: IssuerPolicy
    /// JWKS and RFC 8414 metadata, by path.
    package let documents: [String: LocalDocument]
    let store: any SessionStore
    let revocations: RevocationFanout
    package let sync: RevocationSync
    /// The signing keys kept in a postgres store (nil: in `signing.key_dir`); carried over by a reload.
    package let fleetKeys: FleetKeys?
    /// Other replicas' revocations from a postgres store's notifications (nil for other stores); carried over.
    let revocationBridge: PostgresRevocationBridge?
    private let metrics: MetricsRegistry
    private let usersVerifier: UsersFileVerifier?
    private let purgeTask = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// Opens the keys, the store and the users file; nothing is served yet. A reload passes the running runtime as
    /// `previous`: its session store, revocation fan-out and sync carry over (the store configuration cannot change
    /// without a restart), everything else is read anew (keys, users, lifetimes, limits).
    package static func start(
        _ service: TokenService, configuration: GatewayConfiguration, credentials upstreamCredentials: (any CredentialVerifier)?,
        metrics: MetricsRegistry, logger: Logger, previous: TokenServiceRuntime? = nil
    ) async throws -> TokenServiceRuntime {
        let now = WallClock.now()
        let leeway = Double(configuration.auth.leewaySeconds)
        let retention = Double(service.accessTokenTTLSeconds) + leeway
        // With a postgres store the keys are the fleet's, in the database (read below, once the store is open).
        _ = try FleetKeys.requiredSecret(service, store: configuration.store)
        var fileKeys: (SigningKey, IssuerPolicy, String)?
        if configuration.store.kind != .postgres { fileKeys = try TokenServiceKeys.open(service, now: now, retention: retention) }

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
        let sync = previous?.sync ?? RevocationSync(store: store, retention: retention, clock: WallClock.now)
        let revocationBridge =
            previous?.revocationBridge ?? (store as? PostgresSessionStore).map { PostgresRevocationBridge(store: $0, sync: sync) }
        let fleetKeys = try await FleetKeys.open(
            service, configuration: configuration, store: store, previous: previous?.fleetKeys, now: now, logger: logger)
        let fleetMaterial = fleetKeys?.material(for: service, retention: retention, now: now)
        let (signingKey, issuerPolicy, jwks) = fleetMaterial.map { ($0.signing, $0.policy, $0.jwks) } ?? fileKeys!
        let ownIssuer = service.issuer
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
        let limiter =
            previous.map(\.sessions.limiter).flatMap { $0.limits == wanted ? $0 : nil }
            ?? SessionStores.loginFailureCounter(store, limits: wanted)
        let sessions = SessionService(
            settings: settings,
            signer: AccessTokenIssuer(issuer: service.issuer, audience: service.audience, key: signingKey),
            store: store, credentials: credentials,
            limiter: limiter,
            verifier: TokenVerifier(issuers: [issuerPolicy], leeway: leeway),
            onRevoke: { sessionID, until in revocations.publish([(sessionID, ownIssuer, until)]) },
            onEvent: { event in
                switch event {
                case .login(let result): metrics.increment("portcullis_logins_total", [result])
                case .refresh(let result): metrics.increment("portcullis_refreshes_total", [result])
                case .revocation(let cause): metrics.increment("portcullis_revocations_total", [cause])
                }
            },
            clock: WallClock.now,
            // The entry is in the log now: feed readers and this process's sync pick it up at once.
            onRevocationLogged: { sync.wake() })

        var documents: [String: LocalDocument] = [:]
        documents["/.well-known/jwks.json"] =
            fleetKeys != nil
            ? FleetKeys.jwksDocument(jwks, service: service)
            : LocalDocument(contentType: "application/jwk-set+json", body: Array(jwks.utf8), cacheControl: "public, max-age=300")
        let (metadataPath, metadata) = metadataDocument(service, scopes: usersVerifier?.users.allScopes ?? [])
        documents[metadataPath] = LocalDocument(contentType: "application/json", body: metadata, cacheControl: "public, max-age=3600")

        logger.info(
            "token service: issuer \(service.issuer), signing with \(signingKey.algorithm.rawValue) key \(signingKey.kid), \(issuerPolicy.keys.count) key(s) published, store \(configuration.store.kind.rawValue)"
        )
        return TokenServiceRuntime(
            configuration: service, sessions: sessions,
            endpoints: TokenEndpoints(
                prefix: service.pathPrefix, service: sessions, realm: configuration.auth.realm,
                feed: service.revocationsFeedToken.map { RevocationFeed(secret: $0, sync: sync, realm: configuration.auth.realm) }),
            issuerPolicy: issuerPolicy, documents: documents, store: store, revocations: revocations, sync: sync, fleetKeys: fleetKeys,
            revocationBridge: revocationBridge, metrics: metrics, usersVerifier: usersVerifier)
    }

    private init(
        configuration: TokenService, sessions: SessionService, endpoints: TokenEndpoints, issuerPolicy: IssuerPolicy,
        documents: [String: LocalDocument], store: any SessionStore, revocations: RevocationFanout, sync: RevocationSync,
        fleetKeys: FleetKeys?, revocationBridge: PostgresRevocationBridge?, metrics: MetricsRegistry, usersVerifier: UsersFileVerifier?
    ) {
        self.sync = sync
        self.fleetKeys = fleetKeys
        self.revocationBridge = revocationBridge
        self.metrics = metrics
        self.configuration = configuration
        self.sessions = sessions
        self.endpoints = endpoints
        self.issuerPolicy = issuerPolicy
        self.documents = documents
        self.store = store
        self.revocations = revocations
        self.usersVerifier = usersVerifier
    }

    /// Connects revocations to the loops, catches up with the store's revocation log (the revocations that must
    /// survive a restart, and other replicas'), and starts the background work: a poll of the log every 5 s, which
    /// is also the store's health check (readiness condition `store`, `degraded`, `portcullis_store_up`), and the
    /// cleanup every minute. A store that does not answer at start leaves the gateway unready, not stopped.
    package func attach(_ loops: LoopContexts, readiness: Readiness, logger: Logger) async throws {
        revocations.attach(loops)
        let sessions = self.sessions
        let fanout = revocations
        let issuer = configuration.issuer
        let metrics = self.metrics
        let sync = self.sync
        sync.setRetention(sessions.settings.revocationRetention)
        sync.setApply { records in
            fanout.publish(records.map { ($0.sessionID, issuer, $0.until) })
            for record in records { sessions.noteRevoked(record.sessionID, until: record.until) }
        }
        if !readiness.contains("store") { readiness.register("store", ready: false) }
        let health = StoreHealth(readiness: readiness, metrics: metrics, logger: logger)
        let reportSequence: @Sendable () -> Void = {
            metrics.setGauge("portcullis_revocations_sequence", [issuer], Double(sync.lastApplied))
        }
        let before = sync.lastApplied
        do {
            try await sync.catchUp()
            health.answered()
            reportSequence()
            let applied = sync.lastApplied - before
            if applied > 0 {
                logger.info(
                    "token service: caught up with the revocation log (\(applied) entr\(applied == 1 ? "y" : "ies"), up to \(sync.lastApplied))"
                )
            }
        } catch {
            health.failed(error)
        }
        // After the first catch-up, with `apply` set: an entry read before would move the sequence past it unapplied.
        // The listener's connection also hears of new signing keys: they are published here at once, not at the
        // keys' next periodic read.
        let fleetKeys = self.fleetKeys
        revocationBridge?.start(health: health, keysChanged: { fleetKeys?.refreshNow() })
        sync.startPolling(every: .seconds(5)) { result in
            switch result {
            case .success:
                health.answered()
                reportSequence()
            case .failure(let error): health.failed(error)
            }
        }
        let task = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(60))
                if Task.isCancelled { break }
                do {
                    let removed = try await sessions.purge()
                    if removed > 0 { logger.info("token service: removed \(removed) expired session(s)") }
                } catch {
                    logger.warning("token service: session cleanup failed: \(error)")
                }
            }
        }
        purgeTask.withLockedValue { $0 = task }
    }

    /// Stops the background work and the password workers; closes the store unless a newer runtime took it over.
    package func shutdown(closingStore: Bool = true) async {
        purgeTask.withLockedValue { $0?.cancel() }
        await usersVerifier?.shutdown()
        if closingStore {
            // No newer runtime took the sync over: stop its poll and answer the feed's waiting readers.
            await revocationBridge?.stop()
            fleetKeys?.stop()
            sync.stop()
            await store.close()
        }
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

/// Opens the configured session store.
package enum SessionStores {
    package static func open(_ store: Store) async throws -> any SessionStore {
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
