import Testing
@testable import GatewayProxy

@Test func placeholder() { #expect(Bool(true)) }
