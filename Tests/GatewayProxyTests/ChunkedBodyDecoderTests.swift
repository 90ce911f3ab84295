import Testing

@testable import GatewayProxy

@Suite struct ChunkedBodyDecoderTests {
    /// Decodes `wire` fed in pieces of `step` bytes; nil when malformed.
    private func decode(_ wire: String, step: Int) -> (payload: String, complete: Bool)? {
        var decoder = ChunkedBodyDecoder()
        var payload: [UInt8] = []
        let bytes = Array(wire.utf8)
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + step)
            do { try decoder.decode(bytes[start..<end], into: &payload) } catch { return nil }
            start = end
        }
        return (String(decoding: payload, as: UTF8.self), decoder.isComplete)
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func payloadWhateverThePieces(step: Int) {
        let wire = "9\r\nrefused w\r\nA;ext=\"x\"\r\nith 403 ok\r\n1 ; e\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\nafter"
        let result = decode(wire, step: step)
        #expect(result?.payload == "refused with 403 ok\n")
        #expect(result?.complete == true)
    }

    @Test func incompleteUntilTheTrailerSectionEnds() {
        #expect(decode("3\r\nabc\r\n", step: 100)?.complete == false)
        #expect(decode("3\r\nabc\r\n0\r\n", step: 100)?.complete == false)
        #expect(decode("3\r\nabc\r\n0\r\n\r\n", step: 100)?.complete == true)
        #expect(decode("fF\r\n", step: 100)?.complete == false)
    }

    @Test(arguments: [
        "\r\n", "x\r\n", "-1\r\n", "3\nabc\r\n", "3\r\nabcd\r\n", "3\r\nabc\n", "3 \r\n", "3;\nx\r\n",
        "1000000000000000\r\n", "0\r\nX: \u{1}\r\n\r\n", "0\r\n\n", "0x3\r\n",
    ])
    func malformedFramingIsRefused(wire: String) {
        #expect(decode(wire, step: 1) == nil, "accepted \(wire.debugDescription)")
    }

    @Test func fifteenHexDigitsAreTheLimit() {
        var decoder = ChunkedBodyDecoder()
        var payload: [UInt8] = []
        #expect(throws: Never.self) { try decoder.decode(Array("fffffffffffffff\r\nab".utf8), into: &payload) }
        #expect(payload == Array("ab".utf8))
    }
}
