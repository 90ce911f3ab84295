import NIOHTTP1
import Testing

@testable import GatewayProxy

/// The chunk sizes NIO's decoder never reports (issue 10: a 2^64-1 chunk passed `max_body_bytes` and the client's
/// next request went upstream as body bytes).
@Suite struct ChunkedBodyGuardTests {
    static let limit: Int64 = 1 << 20

    /// Drives the guard the way `IdleConnectionHandler` does, in reads of `readSize` bytes, handing it `framings` in
    /// order at each head end. Returns what it decided: "head" per head end, "tooLarge" (and stops) on a refusal.
    static func run(
        _ text: String, framings: [ChunkedBodyGuard.Framing?], readSize: Int = .max
    ) -> (events: [String], guard: ChunkedBodyGuard) {
        var g = ChunkedBodyGuard()
        var framings = framings[...]
        var events: [String] = []
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            let read = Array(bytes[start..<min(bytes.count, start + min(readSize, bytes.count))])
            start += read.count
            var scanned = 0
            while scanned < read.count {
                let outcome = read.withUnsafeBytes { g.scan(UnsafeRawBufferPointer(rebasing: $0[scanned...])) }
                switch outcome {
                case .consumed: scanned = read.count
                case .headEnd(let n):
                    scanned += n
                    events.append("head")
                    g.headDecoded(framings.popFirst() ?? nil)
                case .chunkTooLarge:
                    events.append("tooLarge")
                    return (events, g)
                }
            }
        }
        return (events, g)
    }

    static let post = "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    static let get = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n"

    @Test func hugeChunkSizeIsRefusedBeforeTheDecoderSeesIt() {
        for readSize in [1, 3, 64, Int.max] {
            let (events, _) = Self.run(
                Self.post + "ffffffffffffffff\r\nabc" + Self.get, framings: [.chunked(limit: Self.limit)], readSize: readSize)
            #expect(events == ["head", "tooLarge"], "read size \(readSize)")
        }
    }

    @Test func declaredSizesAddUp() {
        let body = "80000\r\n" + String(repeating: "a", count: 0x80000) + "\r\n80001\r\n"
        #expect(Self.run(Self.post + body, framings: [.chunked(limit: Self.limit)]).events == ["head", "tooLarge"])
        let exact = "80000\r\n" + String(repeating: "a", count: 0x80000) + "\r\n80000\r\n"
        #expect(Self.run(Self.post + exact, framings: [.chunked(limit: Self.limit)]).events == ["head"])
    }

    @Test func validChunkedBodiesPassAndTheNextHeadIsFound() {
        let body = "5;ext=1\r\nhello\r\n1A\r\n" + String(repeating: "b", count: 26) + "\r\n0\r\nX-Checksum: 1\r\n\r\n"
        for readSize in [1, 2, 7, Int.max] {
            let (events, g) = Self.run(
                Self.post + body + Self.get, framings: [.chunked(limit: Self.limit), ChunkedBodyGuard.Framing.none], readSize: readSize)
            #expect(events == ["head", "head"], "read size \(readSize)")
            #expect(g.state == .head(window: 0))
        }
    }

    @Test func headEndsAreFoundAcrossEveryReadSplit() {
        let text = "GET /a HTTP/1.1\r\nHost: h\r\nX-A: \n\r\n\r\r\n\r\n" + Self.get
        for readSize in 1...text.utf8.count {
            let (events, g) = Self.run(text, framings: [ChunkedBodyGuard.Framing.none, ChunkedBodyGuard.Framing.none], readSize: readSize)
            #expect(events == ["head", "head"] && g.state == .head(window: 0), "read size \(readSize)")
        }
        // A lone LF or CR never ends a head early.
        #expect(Self.run("GET /a HTTP/1.1\nHost: h\n\n", framings: []).events.isEmpty)
    }

    @Test func fixedLengthBodiesAreSkipped() {
        let text = "POST /u HTTP/1.1\r\nContent-Length: 8\r\n\r\n\r\n\r\nffff" + Self.get
        let (events, g) = Self.run(text, framings: [.length(8), ChunkedBodyGuard.Framing.none])
        #expect(events == ["head", "head"])
        #expect(g.isFollowing)
    }

    @Test func anythingUnexpectedStandsAsideForTheDecoder() {
        for body in [
            "+5\r\nhello\r\n", "0x5\r\n", " 5\r\n", "5 \r\n", "-5\r\n", "5\nhello", "\r\n5\r\n", "5\r\nhelloXX",
            "fffffffffffffffff1\r\n",
        ] {
            let (events, g) = Self.run(Self.post + body, framings: [.chunked(limit: Self.limit)])
            #expect(events == ["head"] && !g.isFollowing, "\(body.debugDescription)")
        }
        // No head decoded from what looked like one, or a framing it does not follow.
        #expect(!Self.run("\r\n\r\n" + Self.get, framings: [nil]).guard.isFollowing)
        #expect(!Self.run(Self.get, framings: [.unknown]).guard.isFollowing)
        #expect(!ChunkedBodyGuard(following: false).isFollowing)
    }

    @Test func framingOfAHead() {
        func framing(_ pairs: [(String, String)]) -> ChunkedBodyGuard.Framing {
            ChunkedBodyGuard.framing(of: HTTPHeaders(pairs), limit: 10)
        }
        #expect(framing([("Host", "h")]) == ChunkedBodyGuard.Framing.none)
        #expect(framing([("content-length", "0")]) == ChunkedBodyGuard.Framing.none)
        #expect(framing([("Content-Length", " 12 ")]) == .length(12))
        #expect(framing([("Transfer-Encoding", "Chunked")]) == .chunked(limit: 10))
        #expect(framing([("Transfer-Encoding", "gzip, chunked")]) == .unknown)
        #expect(framing([("Transfer-Encoding", "chunked"), ("Content-Length", "3")]) == .unknown)
        #expect(framing([("Content-Length", "3"), ("Content-Length", "3")]) == .unknown)
        #expect(framing([("Upgrade", "websocket")]) == .unknown)
    }
}
