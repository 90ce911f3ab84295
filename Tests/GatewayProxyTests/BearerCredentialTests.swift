import NIOHTTP1
import Testing

@testable import GatewayProxy

@Suite struct BearerCredentialTests {
    private func extract(_ values: [String]) -> BearerCredential {
        BearerCredential.extract(from: HTTPHeaders(values.map { ("Authorization", $0) }))
    }

    @Test func schemes() {
        #expect(extract([]) == .absent)  // H-missing
        #expect(extract(["Basic dXNlcjpwYXNz"]) == .absent)  // H-basic
        #expect(extract(["Bearer abc.def.ghi"]) == .token("abc.def.ghi"))
        #expect(extract(["bearer abc.def.ghi"]) == .token("abc.def.ghi"))  // H-bearer-lower
        #expect(extract(["BEARER abc.def.ghi"]) == .token("abc.def.ghi"))  // H-bearer-upper
        #expect(extract(["Bearer  abc"]) == .token("abc"))  // H-multi-space: 1*SP
        #expect(extract(["Bearerish abc"]) == .absent)
    }

    @Test func invalidRequests() {
        #expect(extract(["Bearer"]) == .invalidRequest)  // H-bearer-only
        #expect(extract(["Bearer "]) == .invalidRequest)
        #expect(extract(["Bearer\tabc"]) == .invalidRequest)  // H-tab
        #expect(extract(["Bearer a.b.c, Bearer x.y.z"]) == .invalidRequest)  // H-two-creds-one-header
        #expect(extract(["Bearer a.b.c x"]) == .invalidRequest)
        #expect(extract(["Bearer a.b.c", "Bearer a.b.c"]) == .invalidRequest)  // H-two-headers-same
        #expect(extract(["Bearer a.b.c", "Basic x"]) == .invalidRequest)
    }

    @Test func headerNameIsCaseInsensitive() {
        #expect(BearerCredential.extract(from: HTTPHeaders([("authorization", "Bearer t")])) == .token("t"))
        #expect(
            BearerCredential.extract(from: HTTPHeaders([("authorization", "Bearer t"), ("AUTHORIZATION", "Bearer t")])) == .invalidRequest)
    }
}
