import NIOCore

/// The data path's way to ask for an issuer's keys again when a token names a key the current table lacks (an
/// identity provider that rotated its keys). Implemented by the control plane that fetches remote key sets.
public protocol KeyRefetcher: Sendable {
    /// Called on an event loop when a token whose (unverified) `iss` is `issuer` named an unknown key. Returns a
    /// future that completes once a refetch of that issuer's key set has finished and its outcome is installed on
    /// every loop — so the request can be decided again — or nil when no refetch is allowed now (not a remote
    /// issuer, or within its cooldown), and the token is refused at once. Must not block; the future may complete on
    /// any loop, never fails, and completes within the fetch timeout.
    func refetchKeys(issuer: String) -> EventLoopFuture<Void>?
}
