import GatewayProxy
import GatewayTokens
import NIOConcurrencyHelpers
import NIOCore

/// Builds the data path's `TokenVerifier` from the fixed issuer policies and the current keys of every remote key
/// set, and installs it on every event loop (a new `ProxyPolicy` sharing everything else). Control plane only.
package final class VerifierPublisher: Sendable {
    private struct State {
        /// In configured order; remote issuers with the keys they were loaded with (none). A reload replaces them.
        var policies: [IssuerPolicy]
        var remoteKeys: [String: [VerificationKey]] = [:]
        var verifier: TokenVerifier
        var loops: LoopContexts?
        /// Documents that replace the policy's (the token service's JWKS when its keys live in a shared store and
        /// change at runtime); installed together with the verifier, so the JWKS never lags the keys trusted.
        var documents: [String: LocalDocument] = [:]
    }

    private let leeway: Double
    private let state: NIOLockedValueBox<State>

    package init(policies: [IssuerPolicy], leeway: Double) {
        self.leeway = leeway
        self.state = NIOLockedValueBox(State(policies: policies, verifier: TokenVerifier(issuers: policies, leeway: leeway)))
    }

    /// A reload with the same remote key sources: the other issuers' policies (and the remote ones' audiences, types,
    /// claims) change, the fetched keys stay. Returns the verifier to build the new `ProxyPolicy` with.
    package func replacePolicies(_ policies: [IssuerPolicy]) -> TokenVerifier {
        state.withLockedValue { state in
            state.policies = policies
            state.verifier = Self.verifier(policies: policies, remoteKeys: state.remoteKeys, leeway: leeway)
            // The new generation's policy carries its own documents; whoever set these sets them again for it.
            state.documents = [:]
            return state.verifier
        }
    }

    /// Installs the latest verifier on every loop again (after a reload installed a policy built a moment earlier, so
    /// a key-set change in between is not lost).
    package func republish() {
        let loops = state.withLockedValue { $0.loops }
        loops?.apply { context in self.install(on: context) }
    }

    /// The latest verifier and documents on one loop's policy (on that loop). Each loop reads the latest when its
    /// turn comes, so two updates racing can never leave an older table installed after a newer one.
    private func install(on context: LoopContext) {
        let (verifier, documents) = state.withLockedValue { ($0.verifier, $0.documents) }
        context.policy = context.policy.replacing(verifier: verifier, documents: documents)
    }

    private static func verifier(policies: [IssuerPolicy], remoteKeys: [String: [VerificationKey]], leeway: Double) -> TokenVerifier {
        let current = policies.map { policy -> IssuerPolicy in
            guard let keys = remoteKeys[policy.issuer] else { return policy }
            var copy = policy
            copy.keys = keys
            return copy
        }
        return TokenVerifier(issuers: current, leeway: leeway)
    }

    /// Where new verifiers go. Set once the loops exist (their policies need the refetcher, which needs this).
    package func attach(_ loops: LoopContexts) {
        state.withLockedValue { $0.loops = loops }
    }

    /// The latest verifier.
    package var current: TokenVerifier { state.withLockedValue { $0.verifier } }

    /// Replaces `issuer`'s keys and installs the resulting verifier on every loop; when keys were removed, the loops'
    /// verified-token caches are emptied too, so a token verified with a removed key stops working at once. The
    /// future completes once every loop has the new verifier.
    package func update(issuer: String, keys: [VerificationKey], keysRemoved: Bool) -> EventLoopFuture<Void>? {
        let loops = state.withLockedValue { state -> LoopContexts? in
            state.remoteKeys[issuer] = keys
            state.verifier = Self.verifier(policies: state.policies, remoteKeys: state.remoteKeys, leeway: leeway)
            return state.loops
        }
        // Each loop installs the latest verifier when its turn comes, so two updates racing can never leave an
        // older table installed after a newer one.
        return loops?.apply { context in
            self.install(on: context)
            if keysRemoved { context.tokenCache.removeAll() }
        }
    }

    /// Replaces the policy of `policy.issuer` as a whole (the token service's own, whose keys — and so algorithms —
    /// change at runtime when they live in a shared store) and installs the result with `documents` (its JWKS) on
    /// every loop, the same way as `update(issuer:keys:keysRemoved:)`. Nil when no policy has that issuer (a reload
    /// renamed it: the caller is stale) or the loops are not attached yet.
    package func replace(policy: IssuerPolicy, keysRemoved: Bool, documents: [String: LocalDocument]) -> EventLoopFuture<Void>? {
        let loops = state.withLockedValue { state -> LoopContexts? in
            guard let index = state.policies.firstIndex(where: { $0.issuer == policy.issuer }) else { return nil }
            state.policies[index] = policy
            state.documents.merge(documents) { _, new in new }
            state.verifier = Self.verifier(policies: state.policies, remoteKeys: state.remoteKeys, leeway: leeway)
            return state.loops
        }
        return loops?.apply { context in
            self.install(on: context)
            if keysRemoved { context.tokenCache.removeAll() }
        }
    }
}
