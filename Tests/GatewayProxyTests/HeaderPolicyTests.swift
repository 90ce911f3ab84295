import CurlNIO
import GatewayConfig
import GatewayJSON
import NIOHTTP1
import Testing

@testable import GatewayProxy
@testable import GatewayTokens

@Suite struct HeaderPolicyTests {
    private var identityConfig: IdentityHeaders {
        var h = IdentityHeaders()
        h.claims = [
            .init(claim: "email", header: "X-Auth-Email"), .init(claim: "roles", header: "X-User-Roles"),
            .init(claim: "level", header: "X-User-Level"), .init(claim: "org", header: "X-User-Org"),
            .init(claim: "name", header: "X-User-Name"),
        ]
        return h
    }

    private var token: VerifiedToken {
        VerifiedToken(
            issuer: "https://issuer.test", subject: "user-123", audiences: ["api"], scopes: ["read", "write"],
            expiresAt: 2_000_000_000, notBefore: nil, issuedAt: nil, tokenID: "j1", sessionID: nil,
            claims: JSONObject([
                ("email", .string("a@b.test")), ("roles", .array([.string("x"), .string("y")])), ("level", .number(3)),
                ("org", .object(JSONObject([("id", .number(7))]))), ("name", .string("Bob\r\nX-Auth-Roles: admin Zoë")),
            ]))
    }

    private func forward(_ pairs: [(String, String)], identity: VerifiedToken? = nil, forwardToken: Bool = false) -> [CurlHeader] {
        HeaderPolicy(identity: identityConfig, forwardToken: forwardToken)
            .upstreamHeaders(from: HTTPHeaders(pairs), identity: identity, clientAddress: "127.0.0.1", requestID: "rid-1")
    }

    private func values(_ headers: [CurlHeader], _ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    @Test func spoofedIdentityHeadersAreStrippedInEverySpelling() {
        let spoofed = [
            "X-Auth-Subject", "x-auth-subject", "X-AUTH-SUBJECT", "X_Auth_Subject", "X-Auth_Subject", "X.Auth.Subject",
            "X-Auth-Anything", "X-User-Roles", "x_user.roles", "X-Auth-Scopes", "X-Auth-Issuer",
        ]
        let out = forward(spoofed.map { ($0, "admin") } + [("Accept", "*/*")], identity: token)
        #expect(values(out, "X-Auth-Subject") == ["user-123"])  // X-spoof-exact
        #expect(values(out, "X-User-Roles") == ["x,y"])
        #expect(!out.contains { $0.value == "admin" })
        #expect(values(out, "Accept") == ["*/*"])
    }

    @Test func strippedAlsoWithoutIdentity() {  // auth: none routes
        let out = forward([("X-Auth-Subject", "admin"), ("X_Auth_Subject", "admin")])
        #expect(!out.contains { $0.value == "admin" })
        #expect(values(out, "X-Auth-Subject").isEmpty)
    }

    @Test func hopByHopAndFramingAreDropped() {
        let out = forward(
            [
                ("Connection", "close, X-Custom, x-auth-subject"), ("X-Custom", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"), ("Proxy-Authorization", "Basic x"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "4"), ("Host", "gw.test"), ("Expect", "100-continue"), ("Authorization", "Bearer t"),
                ("X-Forwarded-For", "10.0.0.1"), ("Forwarded", "for=10.0.0.1"), ("X-Forwarded-Proto", "https"), ("Trailer", "x"),
            ], identity: token)
        let names = Set(out.map { $0.name.lowercased() })
        for dropped in [
            "connection", "x-custom", "keep-alive", "te", "upgrade", "proxy-connection", "proxy-authorization",
            "transfer-encoding", "content-length", "host", "expect", "authorization", "forwarded", "trailer",
        ] {
            #expect(!names.contains(dropped), "\(dropped)")
        }
        #expect(values(out, "X-Auth-Subject") == ["user-123"])  // HOP-identity: Connection cannot remove ours
        #expect(values(out, "X-Forwarded-For") == ["127.0.0.1"])  // X-xff: replaced
        #expect(values(out, "X-Forwarded-Proto") == ["http"])
        #expect(values(out, "X-Forwarded-Host") == ["gw.test"])
    }

    @Test func authorizationForwardedOnlyWhenConfigured() {
        #expect(values(forward([("Authorization", "Bearer t")], forwardToken: true), "Authorization") == ["Bearer t"])
        #expect(values(forward([("Authorization", "Bearer t")]), "Authorization").isEmpty)
    }

    @Test func requestIDIsSetOnce() {
        #expect(values(forward([]), "X-Request-Id") == ["rid-1"])
        #expect(values(forward([("X-Request-Id", "a"), ("x-request-id", "b")]), "X-Request-Id") == ["rid-1"])
    }

    @Test func claimValuesAreEncodedSafely() {
        let out = forward([], identity: token)
        #expect(values(out, "X-Auth-Scopes") == ["read write"])
        #expect(values(out, "X-Auth-Issuer") == ["https://issuer.test"])
        #expect(values(out, "X-Auth-Email") == ["a@b.test"])
        #expect(values(out, "X-User-Level") == ["3"])
        #expect(values(out, "X-User-Org") == [#"{"id":7}"#])
        #expect(values(out, "X-User-Name") == ["Bob%0D%0AX-Auth-Roles: admin Zo%C3%AB"])  // X-inject-crlf, X-inject-nonascii
        for header in out {
            #expect(!header.value.utf8.contains { $0 < 0x20 || $0 > 0x7E }, "\(header.name)")
        }
    }

    @Test func percentIsEncodedForReversibility() {
        #expect(HeaderPolicy.encodeValue("100%") == "100%25")
        #expect(HeaderPolicy.encodeValue("plain") == "plain")
        #expect(HeaderPolicy.encodeValue("a\u{0}b\u{7F}") == "a%00b%7F")
    }

    @Test func framingValidation() {
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("Content-Length", "4")])))
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("Content-Length", "4, 4")])))
        #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("Content-Length", "4"), ("Content-Length", "40")])))  // M-dup-cl
        #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("Content-Length", "4"), ("Transfer-Encoding", "chunked")])))  // M-cl-te
        #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("Content-Length", "+4")])))  // M-cl-list
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("Transfer-Encoding", "Chunked")])))
        for te in ["xchunked", "chunked, identity", "identity", "gzip, chunked"] {  // M-te-not-final, M-te-obfuscated
            #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("Transfer-Encoding", te)])), "\(te)")
        }
        #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")])))
        #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("Content-Length", "0x4")])))
        #expect(!HeaderPolicy.validateFraming(HTTPHeaders([("X-A", "a\u{0}b")])))  // M-nul-header
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("X-A", "a\tb")])))
    }
}

@Suite struct ResponseHeaderTests {
    @Test func framingOfUpstreamResponses() {
        #expect(
            GatewayHandler.isUnambiguouslyFramed(CurlResponseHead(status: 200, headers: [CurlHeader(name: "Content-Length", value: "5")])))
        #expect(
            GatewayHandler.isUnambiguouslyFramed(
                CurlResponseHead(status: 200, headers: [CurlHeader(name: "Transfer-Encoding", value: "gzip, chunked")])))
        #expect(
            !GatewayHandler.isUnambiguouslyFramed(
                CurlResponseHead(
                    status: 200,
                    headers: [
                        CurlHeader(name: "Content-Length", value: "5"), CurlHeader(name: "Transfer-Encoding", value: "chunked"),
                    ])))
        #expect(
            !GatewayHandler.isUnambiguouslyFramed(
                CurlResponseHead(
                    status: 200,
                    headers: [
                        CurlHeader(name: "Content-Length", value: "5"), CurlHeader(name: "content-length", value: "6"),
                    ])))
    }

    @Test func framingLookalikeNamesAreRefused() {  // issue 10: `Transfer_Encoding` beside libcurl's framing
        for name in [
            "Transfer_Encoding", "transfer.encoding", "Content_Length", "Content.Length", "Keep_Alive",
            "Proxy_Connection", "Proxy.Authorization",
        ] {
            #expect(!HeaderPolicy.validateFraming(HTTPHeaders([(name, "chunked")])), "\(name)")
        }
        // Exact spellings (any case) keep their usual meaning, and other names with `_` or `.` pass.
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("transfer-encoding", "chunked")])))
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("CONTENT-LENGTH", "5")])))
        #expect(HeaderPolicy.validateFraming(HTTPHeaders([("X_Custom.Name", "1"), ("T_E", "x")])))
    }

    @Test func forbiddenTrailers() {
        #expect(HeaderPolicy.hasForbiddenTrailer(HTTPHeaders([("Content-Length", "5")])))
        #expect(HeaderPolicy.hasForbiddenTrailer(HTTPHeaders([("x", "1"), ("transfer_encoding", "chunked")])))
        #expect(HeaderPolicy.hasForbiddenTrailer(HTTPHeaders([("Host", "evil")])))
        #expect(!HeaderPolicy.hasForbiddenTrailer(HTTPHeaders([("X-Checksum", "abc"), ("grpc-status", "0")])))
    }
}
