import Testing
@testable import CurlNIO

@Test func placeholder() { #expect(Bool(true)) }
