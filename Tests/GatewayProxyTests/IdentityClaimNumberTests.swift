import GatewayJSON
import Testing

@testable import GatewayProxy

/// Issue 10: a number claim reaches the identity header as the token wrote it, not through a `Double`.
@Suite struct IdentityClaimNumberTests {
    @Test func numberClaimsKeepTheirDigits() throws {
        let claims = try JSONParser.parse(#"{"id": 9007199254740993, "ids": [9007199254740993, 1.50], "n": 42, "f": 2.5e3}"#)
        #expect(HeaderPolicy.claimText(try #require(claims["id"])) == "9007199254740993")
        #expect(HeaderPolicy.claimText(try #require(claims["ids"])) == "9007199254740993,1.50")
        #expect(HeaderPolicy.claimText(try #require(claims["n"])) == "42")
        #expect(HeaderPolicy.claimText(try #require(claims["f"])) == "2.5e3")
    }
}
