import Testing

@testable import CurlNIO

/// Trailers through the header callback: after the final head, each `name: value` line is a trailer field (HTTP/2
/// trailing HEADERS, chunked HTTP/1.1 trailers), with no closing blank line.
@Suite struct CurlHeaderParserTrailerTests {
    private func feed(_ parser: inout CurlHeaderParser, _ line: String) -> CurlHeaderParser.Event {
        var bytes = Array(line.utf8)
        return bytes.withUnsafeMutableBytes { parser.parse(line: UnsafeRawBufferPointer($0)) }
    }

    private func headDone() -> CurlHeaderParser {
        var parser = CurlHeaderParser()
        _ = self.feed(&parser, "HTTP/2 200\r\n")
        _ = self.feed(&parser, "content-type: application/grpc\r\n")
        _ = self.feed(&parser, "\r\n")
        return parser
    }

    @Test func trailersAfterTheHeadAreCollectedInOrder() {
        var parser = self.headDone()
        #expect(parser.isComplete)
        #expect(parser.trailers.isEmpty)
        #expect(self.feed(&parser, "grpc-status: 0\r\n") == .none)
        #expect(self.feed(&parser, "grpc-message: all%20good\r\n") == .none)
        #expect(self.feed(&parser, "x-custom:  spaced \t\r\n") == .none)
        #expect(self.feed(&parser, "x-custom: second\r\n") == .none)
        #expect(
            parser.trailers == [
                CurlHeader(name: "grpc-status", value: "0"), CurlHeader(name: "grpc-message", value: "all%20good"),
                CurlHeader(name: "x-custom", value: "spaced"), CurlHeader(name: "x-custom", value: "second"),
            ])
    }

    @Test func aBlankLineAmongTrailersIsIgnored() {
        var parser = self.headDone()
        #expect(self.feed(&parser, "a: 1\r\n") == .none)
        #expect(self.feed(&parser, "\r\n") == .none)
        #expect(self.feed(&parser, "b: 2\n") == .none)
        #expect(parser.trailers == [CurlHeader(name: "a", value: "1"), CurlHeader(name: "b", value: "2")])
    }

    @Test func obsFoldContinuesTheLastTrailer() {
        var parser = self.headDone()
        #expect(self.feed(&parser, "a: one\r\n") == .none)
        #expect(self.feed(&parser, "   two\r\n") == .none)
        #expect(parser.trailers == [CurlHeader(name: "a", value: "one two")])
    }

    @Test func malformedTrailersFailTheTransfer() {
        for line in ["no colon\r\n", ": empty name\r\n", "bad name: x\r\n", "a: b\u{1}c\r\n", " fold without field\r\n"] {
            var parser = self.headDone()
            guard case .error(let message) = self.feed(&parser, line) else {
                Issue.record("accepted \(line.debugDescription)")
                continue
            }
            #expect(message.hasPrefix("trailer: "))
        }
    }

    @Test func noTrailersBeforeTheFinalHead() {
        var parser = CurlHeaderParser()
        _ = self.feed(&parser, "HTTP/1.1 100 Continue\r\n")
        _ = self.feed(&parser, "\r\n")
        _ = self.feed(&parser, "HTTP/1.1 200 OK\r\n")
        _ = self.feed(&parser, "grpc-status: 0\r\n")
        #expect(parser.trailers.isEmpty)
        #expect(self.feed(&parser, "\r\n") == .head(CurlResponseHead(status: 200, headers: [CurlHeader(name: "grpc-status", value: "0")])))
        #expect(parser.trailers.isEmpty)
    }
}
