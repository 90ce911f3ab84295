import CurlNIO
import GatewayConfig
import GatewayProxy

extension GatewayServer {
    /// Checks the upstreams' `http_version` against the running libcurl, as a start would (`portcullis check`):
    /// throws `ConfigErrors` naming `upstreams.<name>.http_version` for HTTP/2 upstreams libcurl cannot carry
    /// (`LibcurlHTTP2Gate`).
    public static func checkUpstreamHTTPVersions(_ configuration: GatewayConfiguration, environment: [String: String]) throws(ConfigErrors)
    {
        let problems = LibcurlHTTP2Gate.problems(
            configuration, libcurl: .running, allowOld: LibcurlHTTP2Gate.allowsOld(environment: environment))
        if !problems.isEmpty { throw ConfigErrors(problems) }
    }
}
