import NIOCore
import NIOEmbedded
import Testing

@testable import GatewayProxy

/// `HTTPVersionSniffer` on an `EmbeddedChannel`: HTTP/1 at the first byte that differs from the preface, HTTP/2 only
/// after all 24 bytes, every byte passed on once, and the sniffer gone afterwards.
@Suite struct HTTPVersionSnifferTests {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// A channel with the sniffer; `chosen` records the decision, and a collector after it the bytes passed on.
    final class Probe {
        var chosen: [HTTPVersionSniffer.Version] = []
        let channel = EmbeddedChannel()

        init() throws {
            let sniffer = HTTPVersionSniffer { [unowned self] version, _ in self.chosen.append(version) }
            try channel.pipeline.syncOperations.addHandler(sniffer)
        }

        func write(_ bytes: [UInt8]) throws {
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes))
        }

        /// Every byte that reached the end of the pipeline.
        func passed() throws -> [UInt8] {
            var out: [UInt8] = []
            while let buffer = try channel.readInbound(as: ByteBuffer.self) { out += buffer.readableBytesView }
            return out
        }

        var snifferRemoved: Bool {
            (try? channel.pipeline.syncOperations.handler(type: HTTPVersionSniffer.self)) == nil
        }
    }

    @Test func classify() {
        #expect(HTTPVersionSniffer.classify([]) == nil)
        #expect(HTTPVersionSniffer.classify(Array("PRI * HTTP/2".utf8)) == nil)
        #expect(HTTPVersionSniffer.classify(Array("POST / HTTP/1.1".utf8)) == .http1)
        #expect(HTTPVersionSniffer.classify(Array("G".utf8)) == .http1)
        #expect(HTTPVersionSniffer.classify(Self.preface) == .http2)
        #expect(HTTPVersionSniffer.classify(Self.preface + [0, 0, 0, 4]) == .http2)
        #expect(HTTPVersionSniffer.classify(Array(Self.preface.dropLast()) + [UInt8(ascii: "x")]) == .http1)
    }

    @Test func shortHTTP1RequestIsDecidedAtOnce() throws {
        let probe = try Probe()
        let request = Array("GET / HTTP/1.1\r\n\r\n".utf8)  // 18 bytes: fewer than the preface
        try probe.write(request)
        #expect(probe.chosen == [.http1])
        #expect(try probe.passed() == request)
        #expect(probe.snifferRemoved)
    }

    @Test func prefaceSplitAcrossReads() throws {
        let probe = try Probe()
        try probe.write(Array(Self.preface[0..<1]))
        try probe.write(Array(Self.preface[1..<17]))
        #expect(probe.chosen.isEmpty)
        #expect(try probe.passed().isEmpty)
        let settings: [UInt8] = [0, 0, 0, 4, 0, 0, 0, 0, 0]
        try probe.write(Array(Self.preface[17...]) + settings)
        #expect(probe.chosen == [.http2])
        #expect(try probe.passed() == Self.preface + settings)
        #expect(probe.snifferRemoved)
        // Later bytes pass straight through.
        try probe.write([1, 2, 3])
        #expect(try probe.passed() == [1, 2, 3])
    }

    @Test func mismatchAfterAPrefixIsHTTP1WithEveryByte() throws {
        let probe = try Probe()
        try probe.write(Array("PRI * HTTP/".utf8))
        #expect(probe.chosen.isEmpty)
        try probe.write(Array("1.1\r\n\r\n".utf8))
        #expect(probe.chosen == [.http1])
        #expect(try probe.passed() == Array("PRI * HTTP/1.1\r\n\r\n".utf8))
    }

    @Test func configurationFailureClosesTheConnection() throws {
        struct Refused: Error {}
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTPVersionSniffer { _, _ in throw Refused() })
        #expect(throws: Refused.self) { try channel.writeInbound(channel.allocator.buffer(bytes: Array("GET".utf8))) }
        #expect(!channel.isActive)
    }
}
