import Testing

@testable import GatewayConfig

/// The listener's TLS and HTTP/2 keys (DESIGN §11): `tls`, `limits.max_concurrent_streams`,
/// `identity_headers.client_cert_subject`.
@Suite struct ListenerTLSConfigTests {
    func parse(_ extra: String) throws(ConfigErrors) -> GatewayConfiguration {
        let json = """
            {"upstreams": {"app": {"url": "http://127.0.0.1:3000"}},
             "routes": [{"path_prefix": "/", "upstream": "app", "auth": "none"}]\(extra)}
            """
        return try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/etc/portcullis", environment: [:])
    }

    func errors(_ extra: String) -> [String] {
        do {
            _ = try parse(extra)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    @Test func defaults() throws {
        let c = try parse("")
        #expect(c.tls == nil)
        #expect(c.limits.maxConcurrentStreams == 100)
        #expect(c.limits.http2HeaderListSize == 2 * c.limits.maxHeaderBytes)
        #expect(c.identityHeaders.clientCertSubject == "X-Auth-Client-Cert-Subject")
    }

    @Test func tlsDecodesWithResolvedPaths() throws {
        let c = try parse(
            #", "tls": {"cert_file": "tls/server.pem", "key_file": "/keys/server.key", "client_ca_file": "ca.pem", "min_version": "1.3"}"#
        )
        #expect(
            c.tls
                == ListenerTLS(
                    certFile: "/etc/portcullis/tls/server.pem", keyFile: "/keys/server.key", clientCAFile: "/etc/portcullis/ca.pem",
                    minVersion: .tls13))
        #expect(c.tls?.files == ["/etc/portcullis/tls/server.pem", "/keys/server.key", "/etc/portcullis/ca.pem"])
        let plain = try parse(#", "tls": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": null}"#)
        #expect(plain.tls?.clientCAFile == nil)
        #expect(plain.tls?.minVersion == .tls12)
    }

    @Test func tlsErrorsNameTheirPath() {
        #expect(errors(#", "tls": {"key_file": "s.key"}"#) == ["tls.cert_file: is required"])
        #expect(errors(#", "tls": {"cert_file": "s.pem"}"#) == ["tls.key_file: is required"])
        #expect(
            errors(#", "tls": {"cert_file": "s.pem", "key_file": "s.key", "min_version": "1.1"}"#).first?.hasPrefix("tls.min_version:")
                == true)
        #expect(errors(#", "tls": {"cert_file": "", "key_file": "s.key"}"#) == ["tls.cert_file: must name a file"])
        #expect(errors(#", "tls": {"cert_file": "s.pem", "key_file": "s.key", "verify": true}"#).first?.hasPrefix("tls.verify") == true)
        #expect(errors(#", "tls": "on""#).first?.hasPrefix("tls:") == true)
    }

    @Test func streamsAndSubjectHeader() throws {
        let c = try parse(
            #", "limits": {"max_concurrent_streams": 250, "max_header_bytes": 8192}, "identity_headers": {"client_cert_subject": "X-Client-DN"}"#
        )
        #expect(c.limits.maxConcurrentStreams == 250)
        #expect(c.limits.http2HeaderListSize == 16384)
        #expect(c.identityHeaders.clientCertSubject == "X-Client-DN")
        #expect(errors(#", "limits": {"max_concurrent_streams": 0}"#).first?.hasPrefix("limits.max_concurrent_streams:") == true)
        #expect(
            errors(#", "identity_headers": {"client_cert_subject": "bad name"}"#).first?.hasPrefix("identity_headers.client_cert_subject:")
                == true)
    }
}
