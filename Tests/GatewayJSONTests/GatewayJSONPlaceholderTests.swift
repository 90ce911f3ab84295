import Testing
@testable import GatewayJSON

@Test func placeholder() { #expect(Bool(true)) }
