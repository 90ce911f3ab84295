import GatewayConfig

/// The configured routes, matched first-to-last against the canonical path (DESIGN §4 `routes`).
public struct RouteTable: Sendable {
    public let routes: [Route]

    public init(_ routes: [Route]) {
        self.routes = routes
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
            path = String(path.dropFirst(route.pathPrefix.count))
            if !path.hasPrefix("/") { path = "/" + path }
        }
        return basePath.isEmpty ? path : basePath + path
    }
}
