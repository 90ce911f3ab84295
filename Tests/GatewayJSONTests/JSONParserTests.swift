import Testing

@testable import GatewayJSON

@Suite struct JSONParserTests {
    @Test func parsesNestedDocument() throws {
        let value = try JSONParser.parse(#"{"a": [1, 2.5, -3e2, true, false, null], "b": {"c": "d\u00e9\n"}}"#)
        #expect(value["a"] == .array([.number(1), .number(2.5), .number(-300), .bool(true), .bool(false), .null]))
        #expect(value["b"]?["c"] == .string("dé\n"))
    }

    @Test func keepsMemberOrder() throws {
        let value = try JSONParser.parse(#"{"z":1,"a":2,"m":3}"#)
        #expect(value.objectValue?.keys == ["z", "a", "m"])
    }

    @Test(arguments: [
        (#"{"a":1,"a":2}"#, JSONError.Code.duplicateKey),
        ("\u{FEFF}{}", .syntax),
        (#"{"a":1,}"#, .syntax),
        ("[1,]", .syntax),
        ("01", .syntax),
        ("1.", .syntax),
        ("-", .syntax),
        (#""\ud800""#, .syntax),
        (#""\udc00x""#, .syntax),
        (#""a\x""#, .syntax),
        ("\"a\u{01}\"", .syntax),
        ("{} x", .syntax),
        ("// c\n{}", .syntax),
        ("NaN", .syntax),
        ("1e999", .syntax),
        ("tru", .syntax),
    ])
    func rejectsMalformed(input: String, code: JSONError.Code) {
        #expect(throws: JSONError.self) { try JSONParser.parse(input) }
        do {
            _ = try JSONParser.parse(input)
        } catch {
            #expect(error.code == code, "\(input)")
        }
    }

    @Test func rejectsInvalidUTF8() {
        let bytes: [UInt8] = [0x22, 0xC3, 0x28, 0x22]
        #expect(throws: JSONError.self) { try JSONParser.parse(bytes) }
    }

    @Test func boundsDepth() throws {
        let deep = String(repeating: "[", count: 33) + String(repeating: "]", count: 33)
        #expect(throws: JSONError.self) { try JSONParser.parse(deep, limits: .token) }
        let ok = String(repeating: "[", count: 32) + String(repeating: "]", count: 32)
        _ = try JSONParser.parse(ok, limits: .token)
    }

    @Test func boundsSize() {
        let big = "\"" + String(repeating: "a", count: 9000) + "\""
        #expect(throws: JSONError.self) { try JSONParser.parse(big, limits: .token) }
    }

    @Test func duplicateDetectionInLargeObjects() {
        var members = (0..<40).map { "\"k\($0)\":\($0)" }
        members.append("\"k7\":0")
        #expect(throws: JSONError.self) { try JSONParser.parse("{" + members.joined(separator: ",") + "}") }
    }

    @Test func errorNamesPath() {
        do {
            _ = try JSONParser.parse(#"{"routes":[{"a":1},{"b":[1,}]}"#)
            Issue.record("expected an error")
        } catch {
            #expect(error.path.jsonPathString == "routes[1].b[1]")
        }
    }

    @Test func surrogatePairs() throws {
        #expect(try JSONParser.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test func writerRoundTripsAndEscapes() throws {
        let text = #"{"a":[1,2.5,"x\"\n\u0001"],"b":null,"c":1767225600}"#
        let value = try JSONParser.parse(text)
        #expect(JSONWriter.string(value) == text)
        #expect(JSONWriter.quoted("a\u{7F}") == #""a\u007f""#)
    }
}
