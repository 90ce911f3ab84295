import Testing

@testable import GatewayConfig

/// An upstream's `http_version` (DESIGN §11): `"1.1"` by default, `"2"` only with https, `"h2c"` only with http.
@Suite struct UpstreamHTTPVersionConfigTests {
    func errors(_ upstream: String) -> [String] {
        let json = """
            {"upstreams": {"app": \(upstream)}, "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}]}
            """
        do {
            _ = try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:])
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    func version(_ upstream: String) throws -> Upstream.HTTPVersion {
        let json = """
            {"upstreams": {"app": \(upstream)}, "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}]}
            """
        return try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:]).upstreams[0].httpVersion
    }

    @Test func valuesAndDefault() throws {
        #expect(try version(#"{"url": "http://127.0.0.1:1"}"#) == .http1_1)
        #expect(try version(#"{"url": "http://127.0.0.1:1", "http_version": "1.1"}"#) == .http1_1)
        #expect(try version(#"{"url": "https://127.0.0.1:1", "http_version": "2"}"#) == .http2)
        #expect(try version(#"{"url": "http://127.0.0.1:1", "http_version": "h2c"}"#) == .h2c)
        #expect(try version(#"{"url": "http://localhost", "unix_socket": "/run/app.sock", "http_version": "h2c"}"#) == .h2c)
    }

    @Test func wrongValuesNameTheirPath() {
        #expect(
            errors(#"{"url": "http://127.0.0.1:1", "http_version": "2.0"}"#) == [
                #"upstreams.app.http_version: must be one of "1.1", "2", "h2c", found "2.0""#
            ])
        #expect(
            errors(#"{"url": "http://127.0.0.1:1", "http_version": 2}"#).first?.hasPrefix("upstreams.app.http_version:") == true)
        #expect(
            errors(#"{"url": "http://127.0.0.1:1", "http_version": "2"}"#) == [
                #"upstreams.app.http_version: "2" is HTTP/2 by TLS's ALPN and needs an https url; use "h2c" for cleartext"#
            ])
        #expect(
            errors(#"{"url": "https://127.0.0.1:1", "http_version": "h2c"}"#) == [
                #"upstreams.app.http_version: "h2c" is HTTP/2 over cleartext and needs an http url; use "2" for https"#
            ])
    }
}
