import CurlNIO
import GatewayConfig
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// What the client connection adds upstream (DESIGN §11): `X-Forwarded-Proto: https` behind TLS, and the verified
/// client certificate's subject under `identity_headers.client_cert_subject`, whose client copies are dropped.
@Suite struct ClientConnectionHeaderTests {
    private func forward(_ pairs: [(String, String)], connection: ClientConnection) -> [CurlHeader] {
        var identity = IdentityHeaders()
        identity.clientCertSubject = "X-Client-DN"  // outside the strip prefix: dropped by name
        return HeaderPolicy(identity: identity, forwardToken: false)
            .upstreamHeaders(from: HTTPHeaders(pairs), identity: nil, clientAddress: nil, requestID: "r", connection: connection)
    }

    private func values(_ headers: [CurlHeader], _ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    @Test func subjectInjectedAndSpoofsDropped() {
        let spoofs = [("X-Client-DN", "CN=admin"), ("x_client.dn", "CN=admin"), ("X-CLIENT-DN", "CN=root")]
        let out = forward(spoofs, connection: ClientConnection(isSecure: true, clientCertificateSubject: "CN=alice,O=Example\r\n"))
        #expect(values(out, "X-Client-DN") == ["CN=alice,O=Example%0D%0A"])
        #expect(!out.contains { $0.name == "x_client.dn" })
        #expect(values(out, "X-Forwarded-Proto") == ["https"])
        let plain = forward(spoofs, connection: .plain)
        #expect(values(plain, "X-Client-DN").isEmpty)
        #expect(!plain.contains { $0.name == "x_client.dn" })
        #expect(values(plain, "X-Forwarded-Proto") == ["http"])
    }

    @Test func streamHeadLimitMeasuresLikeHTTP1() {
        var head = HTTPRequestHead(version: .init(major: 2, minor: 0), method: .GET, uri: "/abc")
        head.headers.add(name: "host", value: "a")
        // "GET /abc HTTP/1.1\r\n" (19) + "host: a\r\n" (9)
        #expect(StreamHeadLimitHandler.size(of: head) == 28)
    }
}
