import GatewayConfig
import Testing

@testable import GatewayProxy

@Suite struct RouteTableTests {
    private func route(
        _ prefix: String, methods: [String] = [], host: String? = nil, upstream: String = "app", strip: Bool = false
    ) -> Route {
        Route(pathPrefix: prefix, methods: methods, host: host, upstream: upstream, auth: .required, scopes: [], stripPrefix: strip)
    }

    @Test func prefixMatchesOnSegmentBoundaries() {
        let table = RouteTable([route("/admin"), route("/")])
        #expect(table.match(method: "GET", host: nil, path: "/admin") == 0)
        #expect(table.match(method: "GET", host: nil, path: "/admin/x") == 0)
        #expect(table.match(method: "GET", host: nil, path: "/administrator") == 1)
        #expect(table.match(method: "GET", host: nil, path: "/ADMIN") == 1)  // P-case: case-sensitive
    }

    @Test func firstMatchWinsWithMethodsAndHost() {
        let table = RouteTable([route("/admin", methods: ["POST", "DELETE"]), route("/api", host: "api.example.com"), route("/admin")])
        #expect(table.match(method: "POST", host: nil, path: "/admin/x") == 0)
        #expect(table.match(method: "GET", host: nil, path: "/admin/x") == 2)
        #expect(table.match(method: "GET", host: "api.example.com", path: "/api") == 1)
        #expect(table.match(method: "GET", host: "other", path: "/api") == nil)
        #expect(table.match(method: "GET", host: nil, path: "/api") == nil)
    }

    @Test func hostRulesAreKnownUpFront() {
        // Without a host-restricted route the policy never reads `Host` for matching (a hot-path cost).
        #expect(!RouteTable([route("/a"), route("/")]).hasHostRules)
        #expect(RouteTable([route("/a"), route("/", host: "api.example.com")]).hasHostRules)
    }

    @Test func noRouteIsNil() {
        #expect(RouteTable([route("/a")]).match(method: "GET", host: nil, path: "/b") == nil)
    }

    @Test func upstreamPathStripsPrefixAndAddsBase() {
        #expect(RouteTable.upstreamPath(for: route("/api", strip: true), canonicalPath: "/api/v1/x", basePath: "") == "/v1/x")
        #expect(RouteTable.upstreamPath(for: route("/api", strip: true), canonicalPath: "/api", basePath: "") == "/")
        #expect(RouteTable.upstreamPath(for: route("/api"), canonicalPath: "/api/x", basePath: "/base") == "/base/api/x")
        #expect(RouteTable.upstreamPath(for: route("/", strip: true), canonicalPath: "/x", basePath: "") == "/x")
    }

    /// Found by the `path` fuzz target: the prefix is matched on the match path (parameters removed) but was stripped
    /// from the forwarded path by character count, so `/api;v=1/items` went upstream as `/;v=1/items`.
    @Test func stripPrefixCountsSegmentsNotCharacters() {
        let api = route("/api", strip: true)
        #expect(RouteTable.upstreamPath(for: api, canonicalPath: "/api;v=1/items", basePath: "") == "/items")
        #expect(RouteTable.upstreamPath(for: api, canonicalPath: "/;x/api/items;y", basePath: "/b") == "/b/items;y")
        #expect(RouteTable.upstreamPath(for: api, canonicalPath: "/api;v=1", basePath: "") == "/")
        #expect(RouteTable.upstreamPath(for: api, canonicalPath: "/api;v=1/", basePath: "") == "/")
        #expect(RouteTable.upstreamPath(for: route("/a/b", strip: true), canonicalPath: "/a/;p/b;q/c/d", basePath: "") == "/c/d")
    }
}
