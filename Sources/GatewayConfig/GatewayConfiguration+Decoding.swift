import GatewayJSON

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension GatewayConfiguration {
    /// JWS algorithms the gateway implements.
    public static let supportedAlgorithms = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    /// The default allow-list: every asymmetric algorithm. HMAC must be listed explicitly.
    public static let defaultAlgorithms = supportedAlgorithms.filter { !$0.hasPrefix("HS") }

    /// Reads and validates the configuration file at `path`.
    public static func load(path: String, environment: [String: String]) throws(ConfigErrors) -> GatewayConfiguration {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            throw ConfigErrors([ConfigError(.unreadableFile, path: "$", "cannot read \(path): \(error.message)")])
        }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        return try parse(bytes, baseDirectory: directory.isEmpty ? "/" : directory, environment: environment)
    }

    /// Validates a configuration document. Every problem is reported, each with its JSON path.
    public static func parse(
        _ bytes: [UInt8], baseDirectory: String, environment: [String: String]
    ) throws(ConfigErrors) -> GatewayConfiguration {
        let document: JSONValue
        do {
            document = try JSONParser.parse(bytes, limits: .document)
        } catch {
            throw ConfigErrors([ConfigError(.syntax, path: error.path.jsonPathString, "\(error.message) (at byte \(error.offset))")])
        }
        let sink = ErrorSink()
        let substituted = EnvironmentSubstitution.apply(document, environment: environment, path: [], sink: sink)
        // An unset variable would cascade into "too short" or "not a URL" errors about the empty value: report it alone.
        guard sink.errors.isEmpty else { throw ConfigErrors(sink.errors) }
        guard var root = ConfigReader.open(substituted, path: [], sink: sink) else { throw ConfigErrors(sink.errors) }
        var decoder = Decoder(baseDirectory: baseDirectory, sink: sink)
        let configuration = decoder.decodeRoot(&root)
        root.finish()
        guard sink.errors.isEmpty else { throw ConfigErrors(sink.errors) }
        return configuration
    }
}

/// Reads the whole file with POSIX calls (no Foundation on this path).
func readFile(_ path: String) throws(FileReadError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(message: String(cString: strerror(errno))) }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw FileReadError(message: String(cString: strerror(errno)))
        }
        if n == 0 { break }
        result.append(contentsOf: chunk[0..<n])
        if result.count > 64 << 20 { throw FileReadError(message: "file larger than 64 MiB") }
    }
    return result
}

struct FileReadError: Error {
    var message: String
}

extension GatewayConfiguration {
    /// Reads a file the configuration refers to (keys, secrets), for the modules that load them.
    public static func readReferencedFile(_ path: String) throws(ConfigError) -> [UInt8] {
        do {
            return try readFile(path)
        } catch {
            throw ConfigError(.unreadableFile, path: "$", "cannot read \(path): \(error.message)")
        }
    }
}

private struct Decoder {
    let baseDirectory: String
    let sink: ErrorSink

    func resolve(_ path: String) -> String {
        path.hasPrefix("/") ? path : (baseDirectory == "." ? path : "\(baseDirectory)/\(path)")
    }

    mutating func decodeRoot(_ root: inout ConfigReader) -> GatewayConfiguration {
        let listen = listenAddress(&root, "listen", default: ListenAddress(host: "0.0.0.0", port: 8080))
        var adminListen: ListenAddress? = listenAddress(&root, "admin_listen", default: ListenAddress(host: "127.0.0.1", port: 9901))
        if root.object["admin_listen"] == .bool(false) { adminListen = nil }
        let tls = decodeTLS(&root)
        let limits = decodeLimits(&root)
        var upstreams = decodeUpstreams(&root)
        let routesValue = root.array("routes")
        if upstreams.isEmpty {
            upstreams = [Upstream.demo]
        }
        let routes: [Route]
        if let routesValue {
            routes = decodeRoutes(routesValue, path: root.childPath("routes"), upstreams: upstreams)
        } else if upstreams.count == 1 && upstreams[0].isEmbeddedDemo {
            routes = [Route(pathPrefix: "/", methods: [], host: nil, upstream: "demo", auth: .required, scopes: [], stripPrefix: false)]
        } else {
            root.record(.missingKey, "routes", "is required when upstreams are configured")
            routes = []
        }
        let auth = decodeAuth(&root)
        let issuers = decodeIssuers(&root)
        let identityHeaders = decodeIdentityHeaders(&root)
        let tokenService = decodeTokenService(&root, upstreams: upstreams)
        let store = decodeStore(&root)
        let log = decodeLog(&root)
        if let tokenService, let index = issuers.firstIndex(where: { $0.issuer == tokenService.issuer }) {
            sink.record(
                .invalidValue, [.key("issuers"), .index(index), .key("issuer")],
                "\(JSONWriter.quoted(tokenService.issuer)) is the token service's own issuer, which is trusted with its own keys; remove this entry"
            )
        }
        if issuers.isEmpty && tokenService == nil && routes.contains(where: { $0.auth != .none }) {
            root.record(
                .missingKey, "issuers",
                "no issuer is configured and the token service is off, so no token can ever be valid on a route with auth \"required\" or \"optional\""
            )
        }
        return GatewayConfiguration(
            listen: listen, adminListen: adminListen, tls: tls, limits: limits, upstreams: upstreams, routes: routes, auth: auth,
            issuers: issuers, identityHeaders: identityHeaders, tokenService: tokenService, store: store, log: log,
            baseDirectory: baseDirectory
        )
    }

    func listenAddress(_ reader: inout ConfigReader, _ key: String, default defaultValue: ListenAddress) -> ListenAddress {
        if reader.object[key] == .bool(false) {
            _ = reader.raw(key)
            return defaultValue
        }
        guard let text = reader.string(key) else { return defaultValue }
        guard let address = parseHostPort(text) else {
            reader.record(
                .invalidValue, key,
                "expected \"host:port\" (for example \"127.0.0.1:8080\" or \"[::1]:8080\"), found \(JSONWriter.quoted(text))")
            return defaultValue
        }
        return address
    }

    func decodeLimits(_ root: inout ConfigReader) -> Limits {
        var limits = Limits()
        guard var r = root.child("limits") else { return limits }
        limits.maxHeaderBytes = r.integer("max_header_bytes", default: limits.maxHeaderBytes, range: 1024...1_048_576)
        limits.maxBodyBytes = Int64(r.integer("max_body_bytes", default: Int(limits.maxBodyBytes), range: 0...(1 << 50)))
        limits.headerTimeoutMs = r.integer("header_timeout_ms", default: limits.headerTimeoutMs, range: 1...3_600_000)
        limits.idleTimeoutMs = r.integer("idle_timeout_ms", default: limits.idleTimeoutMs, range: 1...86_400_000)
        limits.maxConnections = r.integer("max_connections", default: limits.maxConnections, range: 1...1_000_000)
        limits.drainSeconds = r.integer("drain_seconds", default: limits.drainSeconds, range: 0...3600)
        limits.websocketIdleTimeoutMs = r.integer(
            "websocket_idle_timeout_ms", default: limits.websocketIdleTimeoutMs, range: 1...86_400_000)
        limits.websocketCloseTimeoutMs = r.integer(
            "websocket_close_timeout_ms", default: limits.websocketCloseTimeoutMs, range: 1...60_000)
        limits.maxConcurrentStreams = r.integer("max_concurrent_streams", default: limits.maxConcurrentStreams, range: 1...10_000)
        r.finish()
        return limits
    }

    func decodeTLS(_ root: inout ConfigReader) -> ListenerTLS? {
        guard var r = root.child("tls") else { return nil }
        let certFile = r.requiredString("cert_file")
        let keyFile = r.requiredString("key_file")
        let clientCAFile = r.string("client_ca_file")
        let version = r.oneOf("min_version", ListenerTLS.MinimumVersion.allCases.map(\.rawValue), default: "1.2")
        for (key, value) in [("cert_file", certFile), ("key_file", keyFile), ("client_ca_file", clientCAFile)] where value == "" {
            r.record(.invalidValue, key, "must name a file")
        }
        r.finish()
        guard let certFile, let keyFile else { return nil }
        return ListenerTLS(
            certFile: resolve(certFile), keyFile: resolve(keyFile), clientCAFile: clientCAFile.map(resolve),
            minVersion: ListenerTLS.MinimumVersion(rawValue: version) ?? .tls12)
    }

    func decodeUpstreams(_ root: inout ConfigReader) -> [Upstream] {
        guard var r = root.child("upstreams") else { return [] }
        var result: [Upstream] = []
        for member in r.object.members {
            _ = r.raw(member.name)
            let path = r.childPath(member.name)
            guard var u = ConfigReader.open(member.value, path: path, sink: sink) else { continue }
            if !isToken(member.name) {
                sink.record(.invalidValue, path, "upstream names may contain only letters, digits, '-', '_' and '.'")
            }
            var upstream = Upstream(name: member.name, scheme: "http", host: "127.0.0.1", port: 80, basePath: "")
            if let url = u.requiredString("url") {
                if let parsed = parseURL(url) {
                    (upstream.scheme, upstream.host, upstream.port, upstream.basePath) = parsed
                } else {
                    u.record(
                        .invalidValue, "url",
                        "expected an absolute http:// or https:// URL without query, fragment or credentials, found \(JSONWriter.quoted(url))"
                    )
                }
            }
            upstream.unixSocket = u.string("unix_socket").map(resolve)
            upstream.connectTimeoutMs = u.integer("connect_timeout_ms", default: upstream.connectTimeoutMs, range: 1...600_000)
            upstream.timeoutMs = u.integer("timeout_ms", default: upstream.timeoutMs, range: 1...86_400_000)
            upstream.idleTimeoutMs = u.integer("idle_timeout_ms", default: upstream.idleTimeoutMs, range: 1...86_400_000)
            let version = u.oneOf("http_version", Upstream.HTTPVersion.allCases.map(\.rawValue), default: "1.1")
            upstream.httpVersion = Upstream.HTTPVersion(rawValue: version) ?? .http1_1
            switch upstream.httpVersion {
            case .http2 where upstream.scheme != "https":
                u.record(.invalidValue, "http_version", "\"2\" is HTTP/2 by TLS's ALPN and needs an https url; use \"h2c\" for cleartext")
            case .h2c where upstream.scheme != "http":
                u.record(.invalidValue, "http_version", "\"h2c\" is HTTP/2 over cleartext and needs an http url; use \"2\" for https")
            default:
                break
            }
            if var t = u.child("tls") {
                upstream.tls.caFile = t.string("ca_file").map(resolve)
                upstream.tls.clientCertFile = t.string("client_cert_file").map(resolve)
                upstream.tls.clientKeyFile = t.string("client_key_file").map(resolve)
                if (upstream.tls.clientCertFile == nil) != (upstream.tls.clientKeyFile == nil) {
                    t.record(.invalidValue, nil, "client_cert_file and client_key_file go together")
                }
                t.finish()
            }
            u.finish()
            result.append(upstream)
        }
        r.finish()
        return result
    }

    func decodeRoutes(_ values: [JSONValue], path: [JSONPathComponent], upstreams: [Upstream]) -> [Route] {
        var routes: [Route] = []
        for (i, value) in values.enumerated() {
            guard var r = ConfigReader.open(value, path: path + [.index(i)], sink: sink) else { continue }
            var prefix = r.requiredString("path_prefix") ?? "/"
            if !prefix.hasPrefix("/") {
                r.record(.invalidValue, "path_prefix", "must start with \"/\", found \(JSONWriter.quoted(prefix))")
            } else if !isCanonicalPrefix(prefix) {
                r.record(
                    .invalidValue, "path_prefix",
                    "must be a canonical path (no \"//\", \".\" or \"..\" segments, \"%\", \"\\\", \";\" or non-ASCII), found \(JSONWriter.quoted(prefix))"
                )
            }
            if prefix.count > 1 && prefix.hasSuffix("/") { prefix.removeLast() }
            // A missing name is reported by `requiredString`; any name given, `""` included, must be defined: the
            // data path looks each route's upstream up without a fallback.
            let upstream = r.requiredString("upstream")
            if let upstream, !upstreams.contains(where: { $0.name == upstream }) {
                let names = upstreams.map { "\"\($0.name)\"" }.joined(separator: ", ")
                r.record(
                    .invalidValue, "upstream",
                    "no upstream named \(JSONWriter.quoted(upstream)) (defined: \(names.isEmpty ? "none" : names))")
            }
            var methods: [String] = []
            for (j, m) in (r.stringArray("methods") ?? []).enumerated() {
                if isToken(m) && m == m.uppercased() {
                    methods.append(m)
                } else {
                    sink.record(
                        .invalidValue, r.childPath("methods") + [.index(j)],
                        "expected an upper-case HTTP method, found \(JSONWriter.quoted(m))")
                }
            }
            let host = r.string("host").map { $0.lowercased() }
            let auth = Route.AuthMode(rawValue: r.oneOf("auth", ["required", "optional", "none"], default: "required")) ?? .required
            let scopes = r.stringArray("scopes") ?? []
            for (j, s) in scopes.enumerated() where s.isEmpty || s.contains(where: { $0 == " " || $0 == "\"" || $0 == "\\" || !$0.isASCII })
            {
                sink.record(
                    .invalidValue, r.childPath("scopes") + [.index(j)],
                    "a scope is a non-empty ASCII word without spaces, quotes or backslashes")
            }
            if auth == .none && !scopes.isEmpty {
                r.record(.invalidValue, "scopes", "a route with auth \"none\" cannot require scopes")
            }
            let stripPrefix = r.bool("strip_prefix", default: false)
            let websocket = r.bool("websocket", default: true)
            r.finish()
            routes.append(
                Route(
                    pathPrefix: prefix, methods: methods, host: host, upstream: upstream ?? "", auth: auth, scopes: scopes,
                    stripPrefix: stripPrefix, websocket: websocket))
        }
        return routes
    }

    func decodeAuth(_ root: inout ConfigReader) -> Auth {
        var auth = Auth()
        guard var r = root.child("auth") else { return auth }
        if let realm = r.string("realm") {
            if realm.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
                auth.realm = realm
            } else {
                r.record(.invalidValue, "realm", "must be printable ASCII without quotes or backslashes")
            }
        }
        if let audiences = r.stringArray("audiences") { auth.audiences = audiences }
        auth.leewaySeconds = r.integer("leeway_seconds", default: auth.leewaySeconds, range: 0...600)
        auth.forwardToken = r.bool("forward_token", default: auth.forwardToken)
        auth.tokenCacheEntries = r.integer("token_cache_entries", default: auth.tokenCacheEntries, range: 0...10_000_000)
        r.finish()
        return auth
    }

    func decodeIssuers(_ root: inout ConfigReader) -> [Issuer] {
        guard let values = root.array("issuers") else { return [] }
        var issuers: [Issuer] = []
        var seen: Set<String> = []
        for (i, value) in values.enumerated() {
            let path = root.childPath("issuers") + [.index(i)]
            guard var r = ConfigReader.open(value, path: path, sink: sink) else { continue }
            let name = r.requiredString("issuer") ?? ""
            if !name.isEmpty && !seen.insert(name).inserted {
                r.record(
                    .invalidValue, "issuer",
                    "issuer \(JSONWriter.quoted(name)) is listed twice; a token's iss must select exactly one entry")
            }
            var sources: [(String, Issuer.KeySource)] = []
            if let uri = r.string("jwks_uri") {
                if !isAllowedRemoteURL(uri, allowQuery: true) {
                    r.record(
                        .invalidValue, "jwks_uri",
                        "must be an https:// URL (http:// only to a loopback address), found \(JSONWriter.quoted(uri))")
                }
                sources.append(("jwks_uri", .jwksURI(uri)))
            }
            if r.bool("discovery", default: false) {
                if !isAllowedRemoteURL(name) {
                    r.record(.invalidValue, "discovery", "needs an issuer that is an https:// URL (http:// only to a loopback address)")
                }
                sources.append(("discovery", .discovery))
            }
            if let f = r.string("jwks_file") { sources.append(("jwks_file", .jwksFile(resolve(f)))) }
            if let f = r.string("public_key_file") { sources.append(("public_key_file", .publicKeyFile(resolve(f)))) }
            if let s = r.string("hmac_secret") {
                if s.utf8.count < 32 { r.record(.invalidValue, "hmac_secret", "must be at least 32 bytes long") }
                sources.append(("hmac_secret", .hmacSecret(s)))
            }
            if let f = r.string("hmac_secret_file") { sources.append(("hmac_secret_file", .hmacSecretFile(resolve(f)))) }
            if sources.count != 1 {
                r.record(
                    sources.isEmpty ? .missingKey : .invalidValue, nil,
                    sources.isEmpty
                        ? "needs exactly one key source: jwks_uri, discovery, jwks_file, public_key_file, hmac_secret or hmac_secret_file"
                        : "has several key sources (\(sources.map(\.0).joined(separator: ", "))); use exactly one")
            }
            let isHMAC: Bool
            switch sources.first?.1 {
            case .hmacSecret, .hmacSecretFile: isHMAC = true
            default: isHMAC = false
            }
            var algorithms = Self.defaultAlgorithmsFor(hmac: isHMAC)
            if let listed = r.stringArray("algorithms") {
                algorithms = []
                for (j, alg) in listed.enumerated() {
                    if GatewayConfiguration.supportedAlgorithms.contains(alg) {
                        algorithms.append(alg)
                    } else {
                        sink.record(
                            .invalidValue, r.childPath("algorithms") + [.index(j)],
                            alg.lowercased() == "none"
                                ? "\"none\" is never allowed"
                                : "unsupported algorithm \(JSONWriter.quoted(alg)) (supported: \(GatewayConfiguration.supportedAlgorithms.joined(separator: ", ")))"
                        )
                    }
                }
                if listed.isEmpty { r.record(.invalidValue, "algorithms", "must not be empty") }
            }
            if isHMAC && algorithms.contains(where: { !$0.hasPrefix("HS") }) {
                r.record(.invalidValue, "algorithms", "an HMAC secret can only be used with HS256, HS384 or HS512")
            }
            if !isHMAC, case .some = sources.first, algorithms.contains(where: { $0.hasPrefix("HS") }), !isJWKSFile(sources.first?.1) {
                r.record(.invalidValue, "algorithms", "HS* algorithms need an hmac_secret, hmac_secret_file or oct keys in a jwks_file")
            }
            let audiences = r.stringArray("audiences")
            let tokenTypes = r.stringArray("token_types") ?? ["at+jwt", "application/at+jwt"]
            let requiredClaims = r.stringArray("required_claims") ?? []
            let kid = r.string("kid")
            let caFile = r.string("ca_file").map(resolve)
            let cooldown = r.integer("jwks_refetch_cooldown_seconds", default: 10, range: 1...86400)
            let minRefresh = r.integer("jwks_min_refresh_seconds", default: 60, range: 1...86400)
            let maxRefresh = r.integer("jwks_max_refresh_seconds", default: max(900, minRefresh), range: 1...604_800)
            if maxRefresh < minRefresh {
                r.record(.invalidValue, "jwks_max_refresh_seconds", "must not be less than jwks_min_refresh_seconds (\(minRefresh))")
            }
            let maxStale = r.integer("jwks_max_stale_seconds", default: 86400, range: 0...2_592_000)
            let fetchTimeout = r.integer("jwks_fetch_timeout_ms", default: 5000, range: 100...60000)
            let revocationsURI = r.string("revocations_uri")
            let revocationsToken = r.string("revocations_token")
            if let uri = revocationsURI, !isAllowedRemoteURL(uri, allowQuery: true) {
                r.record(
                    .invalidValue, "revocations_uri",
                    "must be an https:// URL (http:// only to a loopback address), found \(JSONWriter.quoted(uri))")
            }
            if let token = revocationsToken, token.utf8.count < 32 {
                r.record(.invalidValue, "revocations_token", "must be at least 32 bytes long")
            }
            if revocationsURI != nil && revocationsToken == nil {
                r.record(.missingKey, "revocations_token", "revocations_uri needs the feed's shared secret in revocations_token")
            }
            if revocationsURI == nil && revocationsToken != nil {
                r.record(.invalidValue, "revocations_token", "only applies together with revocations_uri")
            }
            if let source = sources.first?.1, sources.count == 1, !Self.isRemote(source) {
                // ca_file also serves an https revocation feed.
                for key in Self.remoteOnlyKeys
                where r.object[key] != nil && r.object[key] != .null
                    && !(key == "ca_file" && revocationsURI != nil)
                {
                    r.record(.invalidValue, key, "only applies to an issuer with jwks_uri or discovery")
                }
            }
            r.finish()
            guard let source = sources.first?.1 else { continue }
            issuers.append(
                Issuer(
                    issuer: name, keySource: source, algorithms: algorithms, audiences: audiences, tokenTypes: tokenTypes,
                    requiredClaims: requiredClaims, kid: kid, caFile: caFile, jwksRefetchCooldownSeconds: cooldown,
                    jwksMinRefreshSeconds: minRefresh, jwksMaxRefreshSeconds: maxRefresh,
                    jwksMaxStaleSeconds: maxStale, jwksFetchTimeoutMs: fetchTimeout,
                    revocationsURI: revocationsURI, revocationsToken: revocationsToken))
        }
        return issuers
    }

    static func defaultAlgorithmsFor(hmac: Bool) -> [String] {
        hmac ? ["HS256"] : GatewayConfiguration.defaultAlgorithms
    }

    /// Issuer keys that only mean something for a key set fetched over the network.
    static let remoteOnlyKeys = [
        "ca_file", "jwks_refetch_cooldown_seconds", "jwks_min_refresh_seconds", "jwks_max_refresh_seconds",
        "jwks_max_stale_seconds", "jwks_fetch_timeout_ms",
    ]

    static func isRemote(_ source: Issuer.KeySource) -> Bool {
        switch source {
        case .jwksURI, .discovery: true
        default: false
        }
    }

    func isJWKSFile(_ source: Issuer.KeySource?) -> Bool {
        if case .jwksFile = source { return true }
        return false
    }

    func decodeIdentityHeaders(_ root: inout ConfigReader) -> IdentityHeaders {
        var headers = IdentityHeaders()
        guard var r = root.child("identity_headers") else { return headers }
        func header(_ r: inout ConfigReader, _ key: String, _ current: String) -> String {
            guard let name = r.string(key) else { return current }
            guard isToken(name) else {
                r.record(.invalidValue, key, "\(JSONWriter.quoted(name)) is not a valid header name")
                return current
            }
            return name
        }
        headers.subject = header(&r, "subject", headers.subject)
        headers.scopes = header(&r, "scopes", headers.scopes)
        headers.issuer = header(&r, "issuer", headers.issuer)
        headers.clientCertSubject = header(&r, "client_cert_subject", headers.clientCertSubject)
        headers.stripPrefix = r.string("strip_prefix") ?? headers.stripPrefix
        if var c = r.child("claims") {
            for member in c.object.members {
                guard let name = c.string(member.name) else { continue }
                if isToken(name) {
                    headers.claims.append(.init(claim: member.name, header: name))
                } else {
                    c.record(.invalidValue, member.name, "\(JSONWriter.quoted(name)) is not a valid header name")
                }
            }
            c.finish()
        }
        r.finish()
        return headers
    }

    func decodeTokenService(_ root: inout ConfigReader, upstreams: [Upstream]) -> TokenService? {
        guard var r = root.child("token_service") else { return nil }
        var service = TokenService(keyDirectory: resolve("data/keys"))
        let enabled = r.bool("enabled", default: true)
        if let prefix = r.string("path_prefix") {
            if prefix.hasPrefix("/") && prefix != "/" && isCanonicalPrefix(prefix) {
                service.pathPrefix = prefix
            } else {
                r.record(.invalidValue, "path_prefix", "must be a canonical absolute path other than /")
            }
        }
        service.issuer = r.string("issuer") ?? service.issuer
        service.audience = r.string("audience") ?? service.audience
        service.accessTokenTTLSeconds = r.integer("access_token_ttl_seconds", default: service.accessTokenTTLSeconds, range: 1...86400)
        service.refreshTokenTTLSeconds = r.integer(
            "refresh_token_ttl_seconds", default: service.refreshTokenTTLSeconds, range: 1...31_536_000)
        service.refreshTokenIdleTTLSeconds = r.integer(
            "refresh_token_idle_ttl_seconds", default: service.refreshTokenIdleTTLSeconds, range: 1...31_536_000)
        service.refreshReuseGraceSeconds = r.integer(
            "refresh_reuse_grace_seconds", default: service.refreshReuseGraceSeconds, range: 0...300)
        if var s = r.child("signing") {
            service.signingAlgorithm = s.oneOf("algorithm", ["ES256", "EdDSA", "RS256", "PS256"], default: service.signingAlgorithm)
            service.keyDirectory = s.string("key_dir").map(resolve) ?? service.keyDirectory
            let kek = s.string("key_encryption_key")
            let kekFile = s.string("key_encryption_key_file")
            if let kek, kek.utf8.count < 32 { s.record(.invalidValue, "key_encryption_key", "must be at least 32 bytes long") }
            if kek != nil && kekFile != nil {
                s.record(.invalidValue, "key_encryption_key_file", "give key_encryption_key or key_encryption_key_file, not both")
            }
            service.keyEncryptionKey = kek.map { .value($0) } ?? kekFile.map { .file(resolve($0)) }
            service.activationDelaySeconds = s.integer(
                "activation_delay_seconds", default: service.activationDelaySeconds, range: 0...86400)
            s.finish()
        }
        service.usersFile = r.string("users_file").map(resolve)
        if var l = r.child("login_upstream") {
            let upstream = l.requiredString("upstream")
            if let upstream, !upstreams.contains(where: { $0.name == upstream }) {
                l.record(.invalidValue, "upstream", "no upstream named \(JSONWriter.quoted(upstream))")
            }
            let path = l.string("path") ?? "/login"
            l.finish()
            service.loginUpstream = .init(upstream: upstream ?? "", path: path)
        }
        if let token = r.string("introspection_token") {
            if token.utf8.count < 32 { r.record(.invalidValue, "introspection_token", "must be at least 32 bytes long") }
            service.introspectionToken = token
        }
        if var l = r.child("login_limits") {
            service.loginLimits.perUsername = l.integer("per_username", default: service.loginLimits.perUsername, range: 1...1_000_000)
            service.loginLimits.perAddress = l.integer("per_address", default: service.loginLimits.perAddress, range: 1...1_000_000)
            service.loginLimits.windowSeconds = l.integer("window_seconds", default: service.loginLimits.windowSeconds, range: 1...86400)
            l.finish()
        }
        if let token = r.string("revocations_feed_token") {
            if token.utf8.count < 32 { r.record(.invalidValue, "revocations_feed_token", "must be at least 32 bytes long") }
            service.revocationsFeedToken = token
        }
        if enabled && service.usersFile == nil && service.loginUpstream == nil {
            r.record(.missingKey, "users_file", "the token service needs users_file or login_upstream to check credentials")
        }
        if service.usersFile != nil && service.loginUpstream != nil {
            r.record(.invalidValue, "login_upstream", "give users_file or login_upstream, not both")
        }
        r.finish()
        return enabled ? service : nil
    }

    func decodeStore(_ root: inout ConfigReader) -> Store {
        var store = Store(path: resolve("data/portcullis.db"))
        guard var r = root.child("store") else { return store }
        store.kind = Store.Kind(rawValue: r.oneOf("type", ["sqlite", "memory", "postgres"], default: "sqlite")) ?? .sqlite
        if store.kind == .postgres {
            store.postgres = decodePostgres(&r)
            if r.raw("path") != nil { r.record(.invalidValue, "path", "is for type \"sqlite\"; a postgres store is named by url") }
        } else {
            store.path = r.string("path").map(resolve) ?? store.path
            for key in ["url", "password", "password_file", "ca_file", "pool_size", "connect_timeout_ms"] where r.raw(key) != nil {
                r.record(.invalidValue, key, "is for type \"postgres\"")
            }
        }
        r.finish()
        return store
    }

    /// The keys of `store` for `type: postgres` (DESIGN §9). Errors name the key (`store.url`, `store.password`, …).
    func decodePostgres(_ r: inout ConfigReader) -> PostgresStore? {
        var store: PostgresStore?
        if let url = r.requiredString("url") {
            do {
                store = try PostgresStore.parse(url)
            } catch {
                r.record(.invalidValue, "url", error.message)
            }
        }
        let password = r.string("password")
        let passwordFile = r.string("password_file")
        if let password, password.isEmpty { r.record(.invalidValue, "password", "must not be empty") }
        if password != nil && passwordFile != nil {
            r.record(.invalidValue, "password_file", "give password or password_file, not both")
        }
        let caFile = r.string("ca_file").map(resolve)
        let poolSize = r.integer("pool_size", default: 4, range: 1...100)
        let timeout = r.integer("connect_timeout_ms", default: 2000, range: 100...60000)
        guard var store else { return nil }
        store.password = password.map { .value($0) } ?? passwordFile.map { .file(resolve($0)) }
        if caFile != nil && store.sslMode != .verifyFull {
            // With require the file would not be used (libpq would quietly verify with it); say so rather than guess.
            r.record(.invalidValue, "ca_file", "is only used with sslmode=verify-full")
        }
        store.caFile = caFile
        store.poolSize = poolSize
        store.connectTimeoutMilliseconds = timeout
        return store
    }

    func decodeLog(_ root: inout ConfigReader) -> Log {
        var log = Log()
        guard var r = root.child("log") else { return log }
        log.level = Log.Level(rawValue: r.oneOf("level", Log.Level.allCases.map(\.rawValue), default: "info")) ?? .info
        log.format = Log.Format(rawValue: r.oneOf("format", ["json", "text"], default: "json")) ?? .json
        log.accessLog = r.bool("access_log", default: true)
        r.finish()
        return log
    }
}

extension Upstream {
    /// The embedded demo upstream, started by the gateway itself when the configuration names no upstream.
    static var demo: Upstream {
        var u = Upstream(name: "demo", scheme: "http", host: "demo.portcullis.invalid", port: 80, basePath: "")
        u.isEmbeddedDemo = true
        return u
    }
}

// MARK: - Small syntax helpers

/// RFC 9110 token characters.
func isToken(_ s: String) -> Bool {
    !s.isEmpty
        && s.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
}

func isCanonicalPrefix(_ prefix: String) -> Bool {
    guard
        prefix.utf8.allSatisfy({
            $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "%") && $0 != UInt8(ascii: "\\") && $0 != UInt8(ascii: ";")
                && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#")
        })
    else {
        return false
    }
    let segments = prefix.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
    for (i, segment) in segments.enumerated() {
        if segment == "." || segment == ".." { return false }
        if segment.isEmpty && i != segments.count - 1 { return false }
    }
    return true
}

func parseHostPort(_ text: String) -> ListenAddress? {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else { return nil }
        host = text[text.index(after: text.startIndex)..<close]
        let rest = text[text.index(after: close)...]
        guard rest.hasPrefix(":") else { return nil }
        portText = rest.dropFirst()
    } else {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        host = text[..<colon]
        portText = text[text.index(after: colon)...]
        if host.contains(":") { return nil }
    }
    guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
    return ListenAddress(host: String(host), port: port)
}

/// `scheme://host[:port][/path]` → parts. No userinfo, query or fragment.
func parseURL(_ url: String) -> (String, String, Int, String)? {
    let scheme: String
    var rest: Substring
    if url.hasPrefix("http://") {
        scheme = "http"
        rest = url.dropFirst(7)
    } else if url.hasPrefix("https://") {
        scheme = "https"
        rest = url.dropFirst(8)
    } else {
        return nil
    }
    guard !rest.contains("@"), !rest.contains("?"), !rest.contains("#"), !rest.contains(where: { $0 == " " || !$0.isASCII }) else {
        return nil
    }
    var path = ""
    if let slash = rest.firstIndex(of: "/") {
        path = String(rest[slash...])
        rest = rest[..<slash]
    }
    while path.hasSuffix("/") { path.removeLast() }
    if !path.isEmpty && !isCanonicalPrefix(path) { return nil }
    let defaultPort = scheme == "https" ? 443 : 80
    if let address = parseHostPort(String(rest)) {
        return (scheme, address.host, address.port, path)
    }
    if rest.hasPrefix("[") && rest.hasSuffix("]") {
        return (scheme, String(rest.dropFirst().dropLast()), defaultPort, path)
    }
    guard !rest.isEmpty, !rest.contains(":") else { return nil }
    return (scheme, String(rest).lowercased(), defaultPort, path)
}

/// Remote key-set URLs must be https, except to loopback addresses (tests, sidecars). A key set's URL may carry a
/// query (some providers select a policy with one); an issuer identifier may not (RFC 8414 §2).
func isAllowedRemoteURL(_ url: String, allowQuery: Bool = false) -> Bool {
    var url = Substring(url)
    if allowQuery, let mark = url.firstIndex(of: "?") {
        let query = url[url.index(after: mark)...]
        guard query.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "#") }) else { return false }
        url = url[..<mark]
    }
    guard let (scheme, host, _, _) = parseURL(String(url)) else { return false }
    if scheme == "https" { return true }
    return isLoopbackHost(host)
}

/// `localhost`, `::1` or a dotted-quad 127.0.0.0/8 address (so `127.example.com` is not loopback).
func isLoopbackHost(_ host: String) -> Bool {
    if host == "localhost" || host == "::1" { return true }
    let octets = host.split(separator: ".", omittingEmptySubsequences: false)
    guard octets.count == 4, octets[0] == "127" else { return false }
    return octets.allSatisfy { octet in
        (1...3).contains(octet.utf8.count) && octet.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            && Int(octet)! <= 255
    }
}
