import CurlNIO
import GatewayConfig
import GatewayJSON

/// Refuses upstreams with `http_version` `"2"` or `"h2c"` on a libcurl older than 8.0 (or one built without
/// HTTP/2), as configuration errors naming each one's `http_version`. libcurl 7.88 (Debian 12's) fails an h2c
/// connection with CURLE_HTTP2 as soon as a second transfer reuses it, and spins at full CPU on an HTTP/2 upload once
/// the upstream's flow-control window is full (a client-streaming gRPC call to a slow reader); both were fixed in 8.0.
/// It also hands one multiplexed stream's trailers to another stream's transfer, whose header callback then starts
/// with `grpc-status: 0` instead of a status line. HTTP/1.1 upstreams are unaffected and keep working on 7.88.
public enum LibcurlHTTP2Gate {
    /// Set to `1` to take the risk on an old libcurl anyway: the refusal becomes a warning (on 7.88 calls over TLS
    /// then fail intermittently).
    public static let overrideVariable = "PORTCULLIS_ALLOW_HTTP2_ON_OLD_LIBCURL"

    /// The problems, one per HTTP/2 upstream, when `libcurl` cannot carry them; empty when it can (or when
    /// `allowOld` and the library at least has HTTP/2).
    public static func problems(_ configuration: GatewayConfiguration, libcurl: CurlLibraryVersion, allowOld: Bool) -> [ConfigError] {
        var problems: [ConfigError] = []
        for upstream in configuration.upstreams where upstream.httpVersion.allowsHTTP2 {
            let path: [JSONPathComponent] = [.key("upstreams"), .key(upstream.name), .key("http_version")]
            let version = upstream.httpVersion.rawValue
            if !libcurl.supportsHTTP2 {
                problems.append(
                    ConfigError(
                        .invalidValue, path: path.jsonPathString,
                        "\"\(version)\" needs a libcurl built with HTTP/2; this process runs libcurl \(libcurl) without it"))
            } else if !libcurl.isAtLeast(8, 0) && !allowOld {
                problems.append(
                    ConfigError(
                        .invalidValue, path: path.jsonPathString,
                        "\"\(version)\" needs libcurl 8.0 or newer; this process runs libcurl \(libcurl), whose HTTP/2 fails h2c "
                            + "connections on their first reuse and spins on uploads against a full flow-control window "
                            + "(install libcurl4-openssl-dev from bookworm-backports: scripts/install-deps)"))
            }
        }
        return problems
    }

    /// Whether the environment asks to allow HTTP/2 upstreams on an old libcurl.
    public static func allowsOld(environment: [String: String]) -> Bool {
        environment[overrideVariable] == "1"
    }
}
