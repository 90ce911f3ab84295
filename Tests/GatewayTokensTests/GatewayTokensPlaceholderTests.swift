import Testing
@testable import GatewayTokens

@Test func placeholder() { #expect(Bool(true)) }
