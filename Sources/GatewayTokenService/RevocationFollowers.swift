import CurlNIO
import GatewayConfig
import GatewayControl
import Logging
import NIOCore

/// Every issuer whose revocation feed is followed (`revocations_uri`). A reload keeps the followers whose source is
/// unchanged (they go on from the sequence they reached) and replaces the others.
package final class RevocationFollowers: Sendable {
    let followers: [RevocationFollower]

    init(_ followers: [RevocationFollower]) {
        self.followers = followers
    }

    /// The followers `configuration` asks for; those of `previous` with the same source are taken over.
    package static func build(
        _ configuration: GatewayConfiguration, previous: RevocationFollowers?, loop: any EventLoop, drivers: CurlDriverGroup,
        readiness: Readiness, metrics: MetricsRegistry, logger: Logger
    ) throws -> RevocationFollowers {
        var errors: [ConfigError] = []
        var followers: [RevocationFollower] = []
        for (i, issuer) in configuration.issuers.enumerated() where issuer.revocationsURI != nil {
            do throws(ConfigError) {
                let source = try RevocationFollower.Source(issuer, path: "issuers[\(i)]")
                if let running = previous?.followers.first(where: { $0.source == source }) {
                    followers.append(running)
                } else {
                    followers.append(
                        RevocationFollower(
                            source: source, loop: loop, drivers: drivers, readiness: readiness, metrics: metrics, logger: logger))
                }
            } catch {
                errors.append(error)
            }
        }
        if !errors.isEmpty { throw ConfigErrors(errors) }
        return RevocationFollowers(followers)
    }

    /// Starts the followers that are not running yet (those taken over from `previous` are).
    package func start(applyingTo loops: LoopContexts, previous: RevocationFollowers?) {
        for follower in followers where !(previous?.followers.contains { $0 === follower } ?? false) {
            follower.start(applyingTo: loops)
        }
    }

    /// Stops the followers `next` does not take over and forgets their readiness conditions.
    package func retire(replacedBy next: RevocationFollowers?, readiness: Readiness) {
        for follower in followers where !(next?.followers.contains { $0 === follower } ?? false) {
            follower.stop()
            if !(next?.followers.contains { $0.source.issuer == follower.source.issuer } ?? false) {
                readiness.unregister(follower.source.readinessName)
                follower.forgetMetrics()
            }
        }
    }
}
