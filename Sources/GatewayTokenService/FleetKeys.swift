import GatewayConfig
import GatewayControl
import GatewayJSON
import GatewayProxy
import GatewaySessions
import GatewayTokens
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The token service's signing keys when they live in the fleet's PostgreSQL database (DESIGN §9), as this process
/// uses them: it signs with the newest key whose activation time has passed, and publishes (JWKS) and trusts (data
/// path, logout, introspection) every key that is current, pending or retired within `retention`.
///
/// A key added by `portcullis keys generate --config` on any host is found at once when the database notifies it
/// (`refreshNow`, from the replica's listener), else by a background refresh every `refreshInterval`: published and
/// trusted here at once, signing only from its activation time. Notifications can be lost (a listener reconnecting),
/// so the periodic refresh stays, and the activation delay must be longer than its interval: by the time any
/// replica signs with a key, every replica has had a refresh to trust it. Between refreshes the keys read last are used, so a database outage changes
/// nothing (an activation due meanwhile still happens, by the clock).
///
/// New keys reach the event loops through the generation's `VerifierPublisher` (the same path as a remote key set
/// that changed): the policy and the JWKS are swapped on each loop, never locked on the data path. A reload carries
/// this object over to the new token service (`attach` re-targets it), so there is one refresh per process.
public final class FleetKeys: Sendable {
    /// The keys of one moment, as this process uses them.
    struct Material: Sendable {
        /// The newest key whose activation time has passed.
        var signing: SigningKey
        /// Current, pending and recently retired keys: published and trusted.
        var published: [SigningKey]
        /// The own issuer's policy for the verifiers (every published key, pinned to its algorithm).
        var policy: IssuerPolicy
        /// The JWKS document of `published`.
        var jwks: String
        /// When this material changes by the clock alone (a pending key activates, a retired key expires).
        var nextChange: Double?

        /// What tells two materials apart: the signing kid, then the published ones.
        var fingerprint: [String] { [signing.kid] + published.map(\.kid) }
    }

    /// What new keys are installed into: the running token service and the data path's key table.
    package struct Target: Sendable {
        package var service: TokenService
        package var retention: Double
        package var leeway: Double
        package var sessions: SessionService
        package var publisher: VerifierPublisher

        package init(
            service: TokenService, retention: Double, leeway: Double, sessions: SessionService, publisher: VerifierPublisher
        ) {
            self.service = service
            self.retention = retention
            self.leeway = leeway
            self.sessions = sessions
            self.publisher = publisher
        }
    }

    static let jwksPath = "/.well-known/jwks.json"

    let store: PostgresSigningKeyStore
    /// The configured secret, to tell whether a reload may keep this object.
    let secret: TokenService.SealingSecret
    private let refreshInterval: Duration
    private let clock: @Sendable () -> Double
    private let logger: Logger

    private struct State {
        var keys: [PostgresSigningKeyStore.StoredKey]
        var target: Target?
        /// The fingerprint installed into `target`; nil: nothing yet.
        var installed: [String]?
        var task: Task<Void, Never>?
        var stopped = false
        /// A refresh failed and that was logged: log the recovery once.
        var failing = false
        /// `refreshNow` was called while no sleep was waiting: the next sleep ends at once.
        var wakeRequested = false
        /// The run loop's sleep, waiting for `refreshNow`.
        var sleeper: CheckedContinuation<Void, Never>?
    }

    private let state: NIOLockedValueBox<State>

    private init(
        store: PostgresSigningKeyStore, secret: TokenService.SealingSecret, keys: [PostgresSigningKeyStore.StoredKey],
        refreshInterval: Duration, clock: @escaping @Sendable () -> Double, logger: Logger
    ) {
        self.store = store
        self.secret = secret
        self.refreshInterval = refreshInterval
        self.clock = clock
        self.logger = logger
        self.state = NIOLockedValueBox(State(keys: keys))
    }

    // MARK: - Opening

    /// A postgres store keeps the fleet's signing keys, so the key-encryption key is required with it: checked
    /// before anything connects (also by `portcullis check`). Returns the secret; nil for other stores.
    public static func requiredSecret(_ service: TokenService, store: Store) throws(ConfigErrors) -> TokenService.SealingSecret? {
        guard store.kind == .postgres else { return nil }
        guard let secret = service.keyEncryptionKey else {
            throw ConfigErrors([
                ConfigError(
                    .missingKey, path: "token_service.signing.key_encryption_key",
                    "is required with a postgres store: the fleet's signing keys are kept in the database, sealed under it (or give key_encryption_key_file)"
                )
            ])
        }
        return secret
    }

    /// The fleet's keys when `store` is a PostgreSQL store (nil otherwise): the database's keys, the first one
    /// created (signing at once) when there is none. A reload passes the running token service's `previous`, which
    /// is kept when the secret is unchanged (the store cannot change without a restart), so a reload needs no
    /// database round trip. Throws `ConfigErrors` naming `token_service.signing.key_encryption_key` when it is
    /// missing or does not open the stored keys; store errors as they are.
    static func open(
        _ service: TokenService, configuration: GatewayConfiguration, store: any SessionStore, previous: FleetKeys?, now: Double,
        logger: Logger, refreshInterval: Duration = .seconds(2)
    ) async throws -> FleetKeys? {
        guard let postgres = store as? PostgresSessionStore,
            let secret = try requiredSecret(service, store: configuration.store)
        else { return nil }
        if let previous, previous.secret == secret { return previous }
        let path = "token_service.signing.key_encryption_key"
        let kek = try secret.bytes(path: path)
        guard let algorithm = JWSAlgorithm(rawValue: service.signingAlgorithm) else {
            throw ConfigErrors([ConfigError(.invalidValue, path: "token_service.signing.algorithm", "unsupported algorithm")])
        }
        let keyStore: PostgresSigningKeyStore
        let keys: [PostgresSigningKeyStore.StoredKey]
        do {
            keyStore = try postgres.signingKeys(keyEncryptionKey: kek)
            keys = try await keyStore.keysCreatingFirst(algorithm: algorithm, now: now)
        } catch let error as PostgresSigningKeyStore.SealError {
            throw ConfigErrors([ConfigError(.invalidValue, path: path, error.message)])
        }
        guard !keys.isEmpty else {
            throw ConfigErrors([ConfigError(.invalidValue, path: path, "the store holds no signing key")])
        }
        return FleetKeys(
            store: keyStore, secret: secret, keys: keys, refreshInterval: refreshInterval, clock: WallClock.now,
            logger: logger)
    }

    // MARK: - Material

    /// The keys read last, as `service` uses them at `now`.
    func material(for service: TokenService, retention: Double, now: Double) -> Material {
        Self.material(state.withLockedValue { $0.keys }, issuer: service.issuer, audience: service.audience, retention: retention, now: now)
    }

    /// `keys` (in activation order, not empty) at `now`.
    static func material(
        _ keys: [PostgresSigningKeyStore.StoredKey], issuer: String, audience: String, retention: Double, now: Double
    ) -> Material {
        // Before the first key activates (only if every key was added with a delay) the oldest signs: something must.
        let signing = (PostgresSigningKeyStore.current(keys, now: now) ?? keys[0]).key
        var published = PostgresSigningKeyStore.published(keys, now: now, retention: retention).map(\.key)
        if !published.contains(where: { $0.kid == signing.kid }) { published.insert(signing, at: 0) }
        let (policy, jwks) = TokenServiceKeys.published(published, issuer: issuer, audience: audience)
        var next: Double?
        for key in keys {
            if key.activatesAt > now { next = min(next ?? key.activatesAt, key.activatesAt) }
            if let superseded = key.supersededAt, superseded + retention > now {
                next = min(next ?? (superseded + retention), superseded + retention)
            }
        }
        return Material(signing: signing, published: published, policy: policy, jwks: jwks, nextChange: next)
    }

    /// The JWKS as the gateway serves it. Caches may keep it for at most the activation delay (and 300 s), so a
    /// relying party that honours the cache headers holds a new key before the first token it signs appears.
    static func jwksDocument(_ jwks: String, service: TokenService) -> LocalDocument {
        let maxAge = max(0, min(300, service.activationDelaySeconds))
        return LocalDocument(contentType: "application/jwk-set+json", body: Array(jwks.utf8), cacheControl: "public, max-age=\(maxAge)")
    }

    // MARK: - Running

    /// Installs the current keys into `target` now and keeps them current from then on (the background refresh starts
    /// with the first call). A reload calls it again for its new token service; the old one is no longer written to.
    package func attach(_ target: Target) async {
        let previousTask = state.withLockedValue { state -> Task<Void, Never>? in
            state.target = target
            state.installed = nil
            defer { state.task = nil }
            return state.task
        }
        // One refresh at a time, so an older material can never be installed after a newer one.
        previousTask?.cancel()
        await previousTask?.value
        await install()
        state.withLockedValue { state in
            guard !state.stopped, state.task == nil else { return }
            state.task = Task { await self.run() }
        }
    }

    /// Stops the refresh (shutdown, or a reload that replaced this object).
    package func stop() {
        let task = state.withLockedValue { state -> Task<Void, Never>? in
            state.stopped = true
            defer { state.task = nil }
            return state.task
        }
        task?.cancel()
    }

    private func run() async {
        while !Task.isCancelled {
            let wait = state.withLockedValue { state -> Duration in
                guard let target = state.target, !state.keys.isEmpty else { return refreshInterval }
                let material = Self.material(
                    state.keys, issuer: target.service.issuer, audience: target.service.audience, retention: target.retention,
                    now: clock())
                guard let next = material.nextChange else { return refreshInterval }
                // Wake at an activation or expiry itself, not up to an interval later (plus a millisecond, so the
                // clock has passed it).
                let until = Duration.milliseconds(Int64(max(0, next - clock()) * 1000) + 1)
                return min(until, refreshInterval)
            }
            await sleep(for: wait)
            if Task.isCancelled { break }
            await refresh()
            if Task.isCancelled { break }
            await install()
        }
    }

    /// Re-reads the keys now rather than at the next periodic refresh (a key was added: the database notified it).
    /// Reads stay one at a time, in the refresh task, so an older read can never be installed after a newer one; a
    /// call during a read makes another read right after it.
    package func refreshNow() {
        let sleeper = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let sleeper = state.sleeper else {
                state.wakeRequested = true
                return nil
            }
            state.sleeper = nil
            return sleeper
        }
        sleeper?.resume()
    }

    /// Sleeps for `duration`, or until `refreshNow` or cancellation.
    private func sleep(for duration: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: duration) }
            group.addTask { await self.waitForWake() }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForWake() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { state -> Bool in
                    if state.wakeRequested {
                        state.wakeRequested = false
                        return true
                    }
                    // Cancelled before the continuation was stored: the handler found nothing to resume.
                    if Task.isCancelled { return true }
                    state.sleeper = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let sleeper = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                defer { state.sleeper = nil }
                return state.sleeper
            }
            sleeper?.resume()
        }
    }

    /// Reads the keys from the store; on failure keeps those it has (logged once per outage).
    private func refresh() async {
        do {
            let keys = try await store.keys()
            let recovered = state.withLockedValue { state -> Bool in
                // An empty table (someone deleted the rows) would leave nothing to sign with: keep the last keys.
                if !keys.isEmpty { state.keys = keys }
                defer { state.failing = false }
                return state.failing
            }
            if recovered { logger.info("token service: signing keys read from the store again") }
        } catch {
            let first = state.withLockedValue { state -> Bool in
                defer { state.failing = true }
                return !state.failing
            }
            if first { logger.warning("token service: cannot read the signing keys from the store, keeping the current ones: \(error)") }
        }
    }

    /// Installs the material of now into the target when it differs from what was installed: verification first
    /// (every loop trusts and publishes a key before this process signs with it), then the signer.
    private func install() async {
        let (target, keys, installed) = state.withLockedValue { ($0.target, $0.keys, $0.installed) }
        guard let target, !keys.isEmpty else { return }
        let material = Self.material(
            keys, issuer: target.service.issuer, audience: target.service.audience, retention: target.retention, now: clock())
        let fingerprint = material.fingerprint
        if fingerprint == installed { return }
        let removed = installed.map { !Set($0.dropFirst()).isSubset(of: Set(fingerprint.dropFirst())) } ?? false
        let future = target.publisher.replace(
            policy: material.policy, keysRemoved: removed,
            documents: [Self.jwksPath: Self.jwksDocument(material.jwks, service: target.service)])
        try? await future?.get()
        target.sessions.replaceKeys(
            signer: AccessTokenIssuer(issuer: target.service.issuer, audience: target.service.audience, key: material.signing),
            verifier: TokenVerifier(issuers: [material.policy], leeway: target.leeway))
        state.withLockedValue { $0.installed = fingerprint }
        if let installed, installed != fingerprint {
            logger.info(
                "token service: signing keys changed: signing with \(material.signing.algorithm.rawValue) key \(material.signing.kid), \(material.published.count) key(s) published"
            )
        }
    }
}
