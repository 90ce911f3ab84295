import GatewayConfig
import GatewayTokens

@testable import GatewayProxy

/// `gateway.json` decoding and validation from bytes, with a fixed environment for `${NAME}`. A document that
/// validates must build the data path's policy (routes, upstream targets, header policy) without trapping: the
/// policy's constructor force-unwraps the route → upstream lookup that validation promises (and the token service's
/// login verifier the `login_upstream` one).
let configTarget = FuzzTarget("config", "GatewayConfig decoding + ProxyPolicy construction") { bytes in
    let configuration: GatewayConfiguration
    do throws(ConfigErrors) {
        configuration = try GatewayConfiguration.parse(Array(bytes), baseDirectory: "/fuzz", environment: configEnvironment)
    } catch {
        require(!error.errors.isEmpty, "a refused configuration without any error")
        // Every message names its JSON path; building them must not trap on any input.
        _ = error.description
        return
    }
    // `"routes": []` is valid (every request is answered 404), so an empty list is not checked here.
    var targets: [String: UpstreamTarget] = [:]
    for upstream in configuration.upstreams {
        require(targets[upstream.name] == nil, "upstream \(upstream.name) defined twice")
        targets[upstream.name] = UpstreamTarget(upstream: upstream)
    }
    for route in configuration.routes {
        require(targets[route.upstream] != nil, "route \(route.pathPrefix) names the missing upstream \(route.upstream)")
        // Prefixes are matched against canonical paths: one that is not canonical could never match, or match
        // something else than it says.
        if case .success(let canonical) = CanonicalPath.parse(route.pathPrefix) {
            require(
                canonical.path == route.pathPrefix || route.pathPrefix.contains(";"),
                "route prefix \(route.pathPrefix.debugBytes) is not canonical (\(canonical.path.debugBytes))")
        } else {
            require(false, "route prefix \(route.pathPrefix.debugBytes) is not a valid path")
        }
    }
    // The gateway builds the login verifier with the same unwrapped lookup.
    if let login = configuration.tokenService?.loginUpstream {
        require(targets[login.upstream] != nil, "login_upstream names the missing upstream \(login.upstream)")
    }
    let policy = ProxyPolicy(configuration: configuration, verifier: TokenVerifier(issuers: []), targets: targets)
    require(policy.targets.count == configuration.routes.count, "one target per route")
}

/// What `${NAME}` may name: a secret long enough for HS256, an empty value and a number.
private let configEnvironment = [
    "SECRET": "fuzz-secret-fuzz-secret-fuzz-secret-0123", "EMPTY": "", "PORT": "8080", "ISSUER": "https://issuer.fuzz",
]
