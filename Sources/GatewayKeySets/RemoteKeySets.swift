import CurlNIO
import GatewayControl
import GatewayProxy
import GatewayTokens
import Logging
import NIOCore

/// Every issuer whose keys come over the network (`jwks_uri`, `discovery`): prefetched at start (readiness waits for
/// them), refreshed in the background, refetched on demand when a token names an unknown key, and installed on every
/// event loop when they change. The data path reaches it only through `KeyRefetcher`.
public final class RemoteKeySets: KeyRefetcher {
    private let sets: [String: RemoteKeySet]
    private let ordered: [RemoteKeySet]
    /// Also carries the token service's own keys when they change at runtime (a shared store): one table, so
    /// neither kind of update can overwrite the other's keys.
    package let publisher: VerifierPublisher

    /// - Parameters:
    ///   - policies: every issuer's policy as loaded (remote ones without keys), in configured order.
    ///   - loop: where fetches and timers run (one of the gateway's loops; its libcurl driver does the fetching).
    package init(
        sources: [RemoteKeySource], policies: [IssuerPolicy], leeway: Double, loop: any EventLoop, drivers: CurlDriverGroup,
        readiness: Readiness, logger: Logger
    ) {
        let publisher = VerifierPublisher(policies: policies, leeway: leeway)
        self.publisher = publisher
        self.ordered = sources.map { source in
            RemoteKeySet(source: source, loop: loop, drivers: drivers, publisher: publisher, readiness: readiness, logger: logger)
        }
        var sets: [String: RemoteKeySet] = [:]
        for set in ordered { sets[set.source.issuer] = set }
        self.sets = sets
    }

    /// Starts the prefetches; new key sets are installed on `loops`.
    package func start(installingOn loops: LoopContexts) {
        publisher.attach(loops)
        for set in ordered { set.start() }
    }

    /// Stops timers and fetching (shutdown, or a reload that replaces these key sets); a fetch in flight installs
    /// nothing.
    package func stop() {
        for set in ordered { set.stop() }
    }

    /// The issuers' readiness condition names (a reload that drops these sets unregisters them).
    package var readinessNames: [String] { ordered.map(\.source.readinessName) }

    /// See `VerifierPublisher.replacePolicies`.
    package func replacePolicies(_ policies: [IssuerPolicy]) -> TokenVerifier {
        publisher.replacePolicies(policies)
    }

    package func republish() {
        publisher.republish()
    }

    public func refetchKeys(issuer: String) -> EventLoopFuture<Void>? {
        sets[issuer]?.refetch()
    }

    /// Per issuer, in configured order.
    public func status() -> [KeySetStatus] {
        ordered.map { $0.status() }
    }
}
