import CurlNIO
import GatewayConfig
import GatewayControl
import GatewayKeySets
import GatewayProxy
import GatewaySessions
import GatewayTokenService
import GatewayTokens
import Logging
import NIOCore
import NIOSSL

/// Everything one configuration builds and a reload replaces: the token service, the key tables (static keys and
/// remote key sets) and the data path's `ProxyPolicy`. What lives longer — event loops, libcurl drivers, listeners,
/// the session store, revoked sessions, metrics — is in `Shared`.
final class GatewayGeneration: Sendable {
    let configuration: GatewayConfiguration
    let tokenService: TokenServiceRuntime?
    let remoteKeys: RemoteKeySets?
    /// The followed revocation feeds (`revocations_uri`).
    let followers: RevocationFollowers?
    let policy: ProxyPolicy
    /// Where the token service's own keys go when they change at runtime (kept in a postgres store): the remote key
    /// sets' publisher when there are any (one key table for both), else one of its own.
    let keyPublisher: VerifierPublisher?
    /// The data listener's TLS context built from `tls`; installed on the listener when the generation activates.
    let tlsContext: NIOSSLContext?

    /// What every generation uses.
    struct Shared: Sendable {
        let group: any EventLoopGroup
        let drivers: CurlDriverGroup
        let readiness: Readiness
        let metrics: MetricsRegistry
        /// The embedded demo upstream's socket, when one was started.
        let demoSocket: String?
        /// The data listener's current TLS context (empty without `tls`).
        let listenerTLS: ListenerTLSContext
        let logger: Logger
        /// The libcurl the process runs with, and whether HTTP/2 upstreams are allowed on it even when it is older
        /// than 8.0 (`LibcurlHTTP2Gate.overrideVariable`).
        let libcurl: CurlLibraryVersion
        let allowHTTP2OnOldLibcurl: Bool
    }

    private init(
        configuration: GatewayConfiguration, tokenService: TokenServiceRuntime?, remoteKeys: RemoteKeySets?,
        followers: RevocationFollowers?,
        policy: ProxyPolicy, keyPublisher: VerifierPublisher?, tlsContext: NIOSSLContext?
    ) {
        self.tlsContext = tlsContext
        self.keyPublisher = keyPublisher
        self.followers = followers
        self.configuration = configuration
        self.tokenService = tokenService
        self.remoteKeys = remoteKeys
        self.policy = policy
    }

    /// Builds a generation. On a reload `previous` is the running one: its session store carries over, and so do its
    /// remote key sets (with their fetched keys) when the remote issuers' entries are unchanged. Nothing is installed
    /// on the loops here; throws `ConfigErrors` for problems in referenced files.
    static func build(_ configuration: GatewayConfiguration, shared: Shared, previous: GatewayGeneration?) async throws -> GatewayGeneration
    {
        let logger = shared.logger
        // Before anything starts: an HTTP/2 upstream the running libcurl cannot carry refuses the start or reload.
        let gate = LibcurlHTTP2Gate.problems(configuration, libcurl: shared.libcurl, allowOld: shared.allowHTTP2OnOldLibcurl)
        if !gate.isEmpty { throw ConfigErrors(gate) }
        if !shared.libcurl.isAtLeast(8, 0), let upstream = configuration.upstreams.first(where: { $0.httpVersion.allowsHTTP2 }) {
            logger.warning(
                "upstream \(upstream.name) speaks HTTP/2 through libcurl \(shared.libcurl), older than 8.0, because \(LibcurlHTTP2Gate.overrideVariable)=1: h2c connections fail on reuse and uploads can spin"
            )
        }
        var targets: [String: UpstreamTarget] = [:]
        for upstream in configuration.upstreams {
            if upstream.isEmbeddedDemo && shared.demoSocket == nil {
                throw ConfigErrors([
                    ConfigError(
                        .invalidValue, path: "upstreams", "the embedded demo upstream only starts with the gateway; restart to use it")
                ])
            }
            targets[upstream.name] = UpstreamTarget(
                upstream: upstream, unixSocketOverride: upstream.isEmbeddedDemo ? shared.demoSocket : nil)
        }
        // First: files that do not load refuse the generation before anything else starts.
        let tlsContext = try configuration.tls.map { tls throws(ConfigErrors) in try ListenerTLSContext.make(tls) }

        var tokenService: TokenServiceRuntime? = nil
        if let service = configuration.tokenService {
            tokenService = try await TokenServiceRuntime.start(
                service, configuration: configuration,
                credentials: service.loginUpstream.map { login in
                    LoginUpstreamVerifier(
                        target: targets[login.upstream]!, path: login.path, loop: shared.group.next(), drivers: shared.drivers,
                        logger: logger)
                },
                metrics: shared.metrics, logger: logger, previous: previous?.tokenService)
        }
        let loaded: IssuerLoader.Loaded
        do {
            loaded = try IssuerLoader.load(configuration, additional: tokenService.map { [$0.issuerPolicy] } ?? [])
        } catch {
            // A half-built token service of a refused reload must not keep its workers (its store is the running one's).
            await tokenService?.shutdown(closingStore: previous?.tokenService == nil)
            throw error
        }
        for warning in loaded.warnings { logger.warning("\(warning)") }

        let leeway = Double(configuration.auth.leewaySeconds)
        var verifier = loaded.verifier
        var remoteKeys: RemoteKeySets? = nil
        if let previous, let running = previous.remoteKeys,
            Self.remoteIssuers(of: previous.configuration) == Self.remoteIssuers(of: configuration),
            previous.configuration.auth.leewaySeconds == configuration.auth.leewaySeconds
        {
            // Same key sources: keep the fetched keys and their schedules; only the issuer policies around them change.
            verifier = running.replacePolicies(loaded.policies)
            remoteKeys = running
        } else if !loaded.remote.isEmpty {
            // Fetched on one loop's libcurl driver, never on a request's path.
            remoteKeys = RemoteKeySets(
                sources: loaded.remote, policies: loaded.policies, leeway: leeway, loop: shared.group.next(), drivers: shared.drivers,
                readiness: shared.readiness, logger: logger)
        }

        // Built last: nothing after this may fail, so a refused reload leaves no follower (nor its readiness
        // condition) behind.
        var followers: RevocationFollowers? = nil
        if configuration.issuers.contains(where: { $0.revocationsURI != nil }) {
            do {
                followers = try RevocationFollowers.build(
                    configuration, previous: previous?.followers, loop: shared.group.next(), drivers: shared.drivers,
                    readiness: shared.readiness, metrics: shared.metrics, logger: logger)
            } catch {
                await tokenService?.shutdown(closingStore: previous?.tokenService == nil)
                throw error
            }
        }

        let policy = ProxyPolicy(
            configuration: configuration, verifier: verifier, targets: targets, localDocuments: tokenService?.documents ?? [:],
            localService: tokenService.map { ($0.configuration.pathPrefix, $0.endpoints) }, keyRefetcher: remoteKeys)
        let keyPublisher: VerifierPublisher? =
            tokenService?.fleetKeys == nil ? nil : remoteKeys?.publisher ?? VerifierPublisher(policies: loaded.policies, leeway: leeway)
        return GatewayGeneration(
            configuration: configuration, tokenService: tokenService, remoteKeys: remoteKeys, followers: followers, policy: policy,
            keyPublisher: keyPublisher, tlsContext: tlsContext)
    }

    /// Starts what runs in the background (revocations, the store check, key-set fetches), once the loops have the
    /// policy. `previous` is the generation this one replaces.
    func activate(on loops: LoopContexts, shared: Shared, previous: GatewayGeneration?) async throws {
        // New connections take it from now on; open ones keep theirs.
        if let tlsContext { shared.listenerTLS.install(tlsContext) }
        try await tokenService?.attach(loops, readiness: shared.readiness, logger: shared.logger)
        if let tokenService, let fleetKeys = tokenService.fleetKeys, let keyPublisher {
            // A reload that could not keep the running keys object (another key-encryption key) stops the old one
            // before it installs old keys over these.
            if let old = previous?.tokenService?.fleetKeys, old !== fleetKeys { old.stop() }
            keyPublisher.attach(loops)
            await fleetKeys.attach(
                FleetKeys.Target(
                    service: tokenService.configuration,
                    retention: tokenService.sessions.settings.revocationRetention,
                    leeway: Double(configuration.auth.leewaySeconds), sessions: tokenService.sessions, publisher: keyPublisher))
        }
        followers?.start(applyingTo: loops, previous: previous?.followers)
        if let remoteKeys {
            if remoteKeys === previous?.remoteKeys {
                remoteKeys.republish()
            } else {
                remoteKeys.start(installingOn: loops)
            }
        }
    }

    /// Stops what this generation runs that `next` does not take over. Requests still in flight keep their policy
    /// (and so this generation's token endpoints) until they finish: the token service's workers are stopped only
    /// after `grace`.
    func retire(replacedBy next: GatewayGeneration?, readiness: Readiness, grace: Duration) async {
        if let remoteKeys, remoteKeys !== next?.remoteKeys {
            remoteKeys.stop()
            let kept = Set(next?.remoteKeys?.readinessNames ?? [])
            for name in remoteKeys.readinessNames where !kept.contains(name) { readiness.unregister(name) }
        }
        followers?.retire(replacedBy: next?.followers, readiness: readiness)
        if let tokenService {
            let storeTakenOver = next?.tokenService != nil
            if grace > .zero { try? await Task.sleep(for: grace) }
            await tokenService.shutdown(closingStore: !storeTakenOver)
        }
    }

    /// The configuration entries of the issuers whose keys come over the network, as far as the keys go: the
    /// revocation feed's settings are left out, so a reload that changes only them keeps the fetched keys.
    static func remoteIssuers(of configuration: GatewayConfiguration) -> [Issuer] {
        configuration.issuers.filter { issuer in
            switch issuer.keySource {
            case .jwksURI, .discovery: true
            default: false
            }
        }.map { issuer in
            var keysOnly = issuer
            keysOnly.revocationsURI = nil
            keysOnly.revocationsToken = nil
            return keysOnly
        }
    }

    /// The settings a reload cannot change (they shape listeners, connections and logging, which outlive a
    /// generation); a reload that changes one is refused.
    static func restartOnlyDifferences(_ old: GatewayConfiguration, _ new: GatewayConfiguration) -> [String] {
        var changed: [String] = []
        if old.listen != new.listen { changed.append("listen") }
        if old.adminListen != new.adminListen { changed.append("admin_listen") }
        if old.store != new.store { changed.append("store") }
        if old.log != new.log { changed.append("log") }
        if old.limits.maxHeaderBytes != new.limits.maxHeaderBytes { changed.append("limits.max_header_bytes") }
        if old.limits.headerTimeoutMs != new.limits.headerTimeoutMs { changed.append("limits.header_timeout_ms") }
        if old.limits.idleTimeoutMs != new.limits.idleTimeoutMs { changed.append("limits.idle_timeout_ms") }
        if old.limits.maxConnections != new.limits.maxConnections { changed.append("limits.max_connections") }
        if old.limits.maxConcurrentStreams != new.limits.maxConcurrentStreams { changed.append("limits.max_concurrent_streams") }
        // Certificates, keys, client CAs and the minimum version reload; turning TLS on or off changes the listener.
        if (old.tls == nil) != (new.tls == nil) { changed.append("tls") }
        if old.auth.tokenCacheEntries != new.auth.tokenCacheEntries { changed.append("auth.token_cache_entries") }
        if old.auth.leewaySeconds != new.auth.leewaySeconds { changed.append("auth.leeway_seconds") }
        if (old.tokenService == nil) != (new.tokenService == nil) { changed.append("token_service") }
        return changed
    }
}
