import Testing

@testable import GatewayJSON

/// Issue 10: JSON numbers were parsed into a `Double` only, so a claim `9007199254740993` copied into an identity
/// header reached the upstream as `9007199254740992`. Numbers now keep their text when the `Double` cannot say it.
@Suite struct JSONNumberTests {
    @Test(arguments: [
        "9007199254740993", "-9007199254740993", "12345678901234567890123", "0.1000000000000000055511151231257827",
        "1.0", "1e3", "2.50", "-0", "1E+2", "123456789012345678",
    ])
    func writtenBackAsParsed(literal: String) throws {
        let value = try JSONParser.parse("[\(literal)]")
        #expect(JSONWriter.string(value) == "[\(literal)]")
        #expect(value.arrayValue?.first?.jsonNumber?.text == literal)
    }

    @Test func bigIntegersKeepTheirDigitsButReadAsTheNearestDouble() throws {
        let value = try JSONParser.parse(#"{"id": 9007199254740993, "n": 9007199254740992}"#)
        #expect(value["id"]?.numberValue == 9_007_199_254_740_992)
        #expect(value["id"]?.jsonNumber?.text == "9007199254740993")
        #expect(value["id"] != value["n"])  // equal Doubles, different numbers
        #expect(JSONWriter.string(value) == #"{"id":9007199254740993,"n":9007199254740992}"#)
    }

    @Test func shortIntegersKeepNoText() throws {
        let value = try JSONParser.parse("[1767225600, -42, 0, 999999999999999]")
        for element in value.arrayValue ?? [] { #expect(element.jsonNumber?.source == nil) }
        #expect(JSONWriter.string(value) == "[1767225600,-42,0,999999999999999]")
    }

    @Test func equalityIsByDecimalValue() throws {
        let parsed = try JSONParser.parse("[1.0, 1e2, 2.5, 0.0, -0, 100e-2, 1000000000000000000000]")
        #expect(parsed == .array([.number(1), .number(100), .number(2.5), .number(0), .number(0), .number(1), .number(1e21)]))
        #expect(try JSONParser.parse("0.30000000000000004") != JSONParser.parse("0.3"))
        #expect(try JSONParser.parse("12345678901234567891") != JSONParser.parse("12345678901234567890"))
        // Equal values hash alike, however they are written.
        #expect(Set([JSONValue.number(100), try JSONParser.parse("1e2"), try JSONParser.parse("100.000")]).count == 1)
    }

    @Test func numbersTheGatewayWritesAreUnchanged() {
        #expect(JSONWriter.string(.number(1_767_225_600)) == "1767225600")
        #expect(JSONWriter.string(.number(0.5)) == "0.5")
        #expect(JSONWriter.string(.number(Double.infinity)) == "null")
    }
}
