import GatewayConfig

@testable import GatewayProxy

/// Canonical paths (DESIGN §5): the one form that is both authorised and forwarded. What is accepted must be
/// canonical (parsing it again changes nothing), contain none of what the rules refuse, and the fast path must agree
/// with the full parse. The route prefix stripping on top of it must keep the forwarded path canonical.
let pathTarget = FuzzTarget("path", "GatewayProxy CanonicalPath and route prefix stripping") { bytes in
    let target = FuzzInput(bytes).string
    let result = CanonicalPath.parse(target)
    if let plain = CanonicalPath.parsePlain(target, maxLength: 8192) {
        require(
            plain == CanonicalPath.parseFull(target, maxLength: 8192), "fast path disagrees with the full parse for \(target.debugBytes)")
    }
    guard case .success(let canonical) = result else { return }
    let again = CanonicalPath.parse(canonical.requestTarget)
    require(again == .success(canonical), "not idempotent: \(target.debugBytes) → \(canonical.requestTarget.debugBytes) → \(again)")
    let path = canonical.path
    require(path.hasPrefix("/"), "canonical path does not start with /: \(path.debugBytes)")
    require(!path.contains("//"), "canonical path has //: \(path.debugBytes)")
    for segment in path.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
        let name = segment.prefix { $0 != ";" }
        require(name != "." && name != "..", "dot segment left in \(path.debugBytes) from \(target.debugBytes)")
    }
    require(
        path.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\\") && $0 != UInt8(ascii: "#") && $0 != UInt8(ascii: "?") },
        "forbidden byte in \(path.debugBytes)")
    require(!canonical.matchPath.contains(";"), "match path keeps a parameter: \(canonical.matchPath.debugBytes)")
    require(
        canonical.matchPath.hasPrefix("/") && !canonical.matchPath.contains("//") || canonical.matchPath == "/",
        "match path not canonical: \(canonical.matchPath.debugBytes)")
    // Route matching is on whole segments: a prefix that matches is followed by "/" or the end.
    for prefix in pathPrefixes where RouteTable.prefixMatches(prefix, canonical.matchPath) {
        require(
            prefix == "/" || canonical.matchPath == prefix || canonical.matchPath.hasPrefix(prefix + "/"),
            "prefix \(prefix) matched \(canonical.matchPath.debugBytes) inside a segment")
        let route = Route(pathPrefix: prefix, methods: [], host: nil, upstream: "app", auth: .required, scopes: [], stripPrefix: true)
        for base in ["", "/base"] {
            let upstream = RouteTable.upstreamPath(for: route, canonicalPath: path, basePath: base)
            // Stripping runs on the path (with parameters) after matching on the match path: what is sent must still
            // be canonical, or the upstream could resolve it to another resource than the one authorised.
            if case .success(let forwarded) = CanonicalPath.parse(upstream) {
                require(
                    forwarded.path == upstream,
                    "stripped path \(upstream.debugBytes) (from \(path.debugBytes), prefix \(prefix)) is not canonical")
                // The upstream must see what was matched, minus the prefix: not more, not less.
                if prefix != "/" {
                    let rest = String(canonical.matchPath.dropFirst(prefix.count))
                    let expected = base + (rest.isEmpty ? "/" : rest)
                    require(
                        forwarded.matchPath == expected,
                        "stripping \(prefix) from \(path.debugBytes) sent \(upstream.debugBytes), which matches as \(forwarded.matchPath.debugBytes), not \(expected.debugBytes)"
                    )
                }
            } else {
                require(false, "stripped path \(upstream.debugBytes) (from \(path.debugBytes), prefix \(prefix)) is refused")
            }
        }
    }
}

private let pathPrefixes = ["/", "/api", "/admin", "/a;b", "/x/y"]
