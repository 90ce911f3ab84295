import GatewayConfig

/// The configured routes, matched first-to-last against the canonical path (DESIGN §4 `routes`).
public struct RouteTable: Sendable {
    public let routes: [Route]
    /// Whether any route is restricted to a `host`: when none is, a request's `Host` is never lower-cased and cut
    /// for matching (a per-request cost on the hot path otherwise).
    public let hasHostRules: Bool

    public init(_ routes: [Route]) {
        self.routes = routes
        self.hasHostRules = routes.contains { $0.host != nil }
    }

    /// The index of the first route that matches, or nil (→ 404 `route_not_found`).
    ///
    /// - Parameters:
    ///   - path: `CanonicalPath.matchPath`.
    ///   - host: the request's `Host` without port, lower-cased, or nil when absent.
    public func match(method: String, host: Substring?, path: String) -> Int? {
        for (index, route) in routes.enumerated() {
            guard Self.prefixMatches(route.pathPrefix, path) else { continue }
            if !route.methods.isEmpty && !route.methods.contains(method) { continue }
            if let wanted = route.host, host.map({ $0 == wanted }) != true { continue }
            return index
        }
        return nil
    }

    /// `/admin` matches `/admin` and `/admin/x`, never `/administrator`.
    static func prefixMatches(_ prefix: String, _ path: String) -> Bool {
        if prefix == "/" { return true }
        guard path.hasPrefix(prefix) else { return false }
        let rest = path.utf8.dropFirst(prefix.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }

    /// The path forwarded upstream for `route`: the canonical path, minus the matched prefix when the route says
    /// `strip_prefix`, under the upstream URL's own base path.
    public static func upstreamPath(for route: Route, canonicalPath: String, basePath: String) -> String {
        var path = canonicalPath
        if route.stripPrefix && route.pathPrefix != "/" {
            if path.utf8.contains(UInt8(ascii: ";")) {
                path = stripSegments(ofPrefix: route.pathPrefix, from: path)
            } else {
                path = String(path.dropFirst(route.pathPrefix.count))
            }
            if !path.hasPrefix("/") { path = "/" + path }
        }
        return basePath.isEmpty ? path : basePath + path
    }

    /// The prefix matched the match path, where `;parameters` are removed and segments of parameters only are left
    /// out; in the forwarded path they are still there, so the prefix is removed segment by segment, never by
    /// character count (`/api;v=1/items` → `/items`, `/;x/api/items` → `/items`).
    static func stripSegments(ofPrefix prefix: String, from path: String) -> String {
        var remaining = prefix.utf8.split(separator: UInt8(ascii: "/")).count
        let segments = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst()
        var index = segments.startIndex
        while remaining > 0, index < segments.endIndex {
            if segments[index].first != UInt8(ascii: ";") { remaining -= 1 }
            index += 1
        }
        return segments[index...].map { "/" + String(decoding: $0, as: UTF8.self) }.joined()
    }
}
