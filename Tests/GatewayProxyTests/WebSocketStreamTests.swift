import Testing

@testable import GatewayProxy

/// Frame tracking for WebSocket tunnels: boundaries found by headers alone, bad headers never relayed, close frames
/// injected only between frames.
@Suite struct WebSocketStreamTests {
    /// A frame as a peer would send it. Client frames get a fixed masking key (the tracker never unmasks, so the key's
    /// value does not matter, only the mask bit and the four bytes).
    static func frame(
        opcode: UInt8, fin: Bool = true, rsv1: Bool = false, masked: Bool, payload count: Int, length64: Bool = false
    ) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode]
        let mask: UInt8 = masked ? 0x80 : 0
        if count > 0xFFFF || length64 {
            bytes.append(mask | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: UInt64(count) >> UInt64(shift))) }
        } else if count > 125 {
            bytes += [mask | 126, UInt8(count >> 8), UInt8(count & 0xFF)]
        } else {
            bytes.append(mask | UInt8(count))
        }
        if masked { bytes += [0x11, 0x22, 0x33, 0x44] }
        bytes += (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        return bytes
    }

    static func client(_ opcode: UInt8, fin: Bool = true, _ count: Int) -> [UInt8] {
        frame(opcode: opcode, fin: fin, masked: true, payload: count)
    }

    static func upstream(_ opcode: UInt8, fin: Bool = true, _ count: Int) -> [UInt8] {
        frame(opcode: opcode, fin: fin, masked: false, payload: count)
    }

    /// What a relay writes to the far side when it feeds `reads` through the stream the way a handler does: it keeps
    /// an incomplete header and presents it again with the next read. `endAfterRead` asks for `end(with:)` once that
    /// many reads have gone through.
    struct Relay {
        var stream: WebSocketStream
        var written: [UInt8] = []
        var held: [UInt8] = []
        var failure: WebSocketProtocolError? = nil
        var discarded = 0

        init(_ sender: WebSocketStream.Sender) {
            stream = WebSocketStream(sender: sender)
        }

        mutating func feed(_ read: [UInt8]) {
            let input = held + read
            held = []
            let step = input.withUnsafeBytes { stream.receive($0) }
            switch step {
            case .forward(let count):
                written += input[..<count]
                held = Array(input[count...])
            case .forwardThenInject(let count, let frame):
                written += input[..<count]
                written += frame
                discarded += input.count - count
            case .fail(let count, let error):
                written += input[..<count]
                failure = error
                discarded += input.count - count
            case .discard:
                discarded += input.count
            }
        }

        mutating func end(with frame: [UInt8]) {
            if let now = stream.end(with: frame) {
                discarded += held.count
                held = []
                written += now
            }
        }
    }

    static let injected = WebSocketCloseFrame.toClient(code: 1008, reason: "token_expired")

    @Test func framesPassWhole() {
        var relay = Relay(.client)
        let bytes = Self.client(1, 5) + Self.client(2, 300) + Self.client(9, 0) + Self.client(2, 70_000)
        relay.feed(bytes)
        #expect(relay.written == bytes)
        #expect(relay.held.isEmpty)
        #expect(relay.stream.isAtFrameBoundary)
    }

    @Test func everySplitRelaysTheSameBytes() {
        let bytes =
            Self.client(1, fin: false, 3) + Self.client(9, 4) + Self.client(0, 200) + Self.client(8, 2)
        for size in 1...bytes.count {
            var relay = Relay(.client)
            var start = 0
            while start < bytes.count {
                relay.feed(Array(bytes[start..<min(bytes.count, start + size)]))
                start += size
            }
            #expect(relay.written == bytes, "read size \(size)")
            #expect(relay.failure == nil)
            #expect(relay.stream.senderClosed)
        }
    }

    @Test func incompleteHeaderIsHeldNotRelayed() {
        var relay = Relay(.upstream)
        let frame = Self.frame(opcode: 2, masked: false, payload: 70_000)
        relay.feed(Array(frame[..<5]))
        #expect(relay.written.isEmpty)
        #expect(relay.held.count == 5)
        relay.feed(Array(frame[5...]))
        #expect(relay.written == frame)
    }

    @Test func extensionBitsPassUntouched() {
        var relay = Relay(.upstream)
        let compressed = Self.frame(opcode: 1, rsv1: true, masked: false, payload: 40)
        relay.feed(compressed)
        #expect(relay.written == compressed)
        #expect(relay.failure == nil)
    }

    @Test(arguments: [
        (Self.upstream(1, 3), WebSocketStream.Sender.client, "websocket_unmasked_client_frame"),
        (Self.client(1, 3), .upstream, "websocket_masked_server_frame"),
        (Self.client(0, 3), .client, "websocket_unexpected_continuation"),
        (Self.client(3, 0), .client, "websocket_reserved_opcode"),
        (Self.client(0xB, 0), .client, "websocket_reserved_opcode"),
        (Self.client(9, fin: false, 0), .client, "websocket_fragmented_control_frame"),
        (Self.client(10, 126), .client, "websocket_control_frame_too_long"),
        (Self.client(8, 1), .client, "websocket_bad_close_frame"),
    ])
    func badHeadersAreRefusedBeforeAnyByteOfThem(bad: [UInt8], sender: WebSocketStream.Sender, code: String) {
        var relay = Relay(sender)
        let good = sender == .client ? Self.client(2, 10) : Self.upstream(2, 10)
        relay.feed(good + bad + good)
        #expect(relay.written == good)
        #expect(relay.failure == WebSocketProtocolError(code: code))
        #expect(relay.failure?.closeCode == 1002)
        #expect(relay.stream.isEnded)
        relay.feed(good)
        #expect(relay.written == good)
    }

    @Test func lengthWithTheHighBitSetIsRefused() {
        var header: [UInt8] = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]
        var relay = Relay(.client)
        relay.feed(header)
        #expect(relay.failure?.code == "websocket_bad_length")
        header[2] = 0x7F
        relay = Relay(.client)
        relay.feed(header)
        #expect(relay.failure == nil)
        #expect(relay.written == header)
    }

    @Test func messagesMayNotInterleave() {
        var relay = Relay(.client)
        relay.feed(Self.client(1, fin: false, 2) + Self.client(10, 1) + Self.client(2, 2))
        #expect(relay.failure?.code == "websocket_interleaved_message")
        #expect(relay.written == Self.client(1, fin: false, 2) + Self.client(10, 1))
    }

    @Test func nothingAfterTheSendersClose() {
        var relay = Relay(.upstream)
        relay.feed(Self.upstream(8, 2))
        #expect(relay.stream.senderClosed)
        relay.feed(Self.upstream(1, 2))
        #expect(relay.failure?.code == "websocket_frame_after_close")
        #expect(relay.written == Self.upstream(8, 2))
    }

    @Test func endAtABoundaryIsImmediate() {
        var relay = Relay(.upstream)
        relay.feed(Self.upstream(1, 4))
        relay.end(with: Self.injected)
        #expect(relay.written == Self.upstream(1, 4) + Self.injected)
        #expect(relay.stream.isEnded)
        relay.feed(Self.upstream(1, 4))
        #expect(relay.written == Self.upstream(1, 4) + Self.injected)
        #expect(relay.discarded == Self.upstream(1, 4).count)
    }

    @Test func endInsideAPayloadWaitsForItsEnd() {
        var relay = Relay(.upstream)
        let big = Self.upstream(2, 1000)
        relay.feed(Array(big[..<500]))
        relay.end(with: Self.injected)
        #expect(relay.written == Array(big[..<500]))
        #expect(!relay.stream.isEnded)
        relay.feed(Array(big[500...]) + Self.upstream(1, 3))
        #expect(relay.written == big + Self.injected)
        #expect(relay.discarded == Self.upstream(1, 3).count)
    }

    @Test func endInsideAPayloadGoesOutWhenTheReadEndsOnTheBoundary() {
        var relay = Relay(.upstream)
        let big = Self.upstream(2, 1000)
        relay.feed(Array(big[..<500]))
        relay.end(with: Self.injected)
        relay.feed(Array(big[500...]))
        #expect(relay.written == big + Self.injected)
        #expect(relay.stream.isEnded)
    }

    @Test func aHeldPartialHeaderIsABoundary() {
        var relay = Relay(.client)
        let next = Self.client(2, 300)
        relay.feed(Self.client(1, 2) + next[..<3])
        relay.end(with: Self.injected)
        #expect(relay.written == Self.client(1, 2) + Self.injected)
        #expect(relay.discarded == 3)
    }

    @Test func aSecondEndKeepsTheFirstFrame() {
        var stream = WebSocketStream(sender: .upstream)
        let frame = Self.upstream(2, 10)
        _ = frame[..<5].withUnsafeBytes { stream.receive($0) }
        #expect(stream.end(with: [1]) == nil)
        #expect(stream.end(with: [2]) == nil)
        let step = frame[5...].withUnsafeBytes { stream.receive($0) }
        #expect(step == .forwardThenInject(count: 7, frame: [1]))  // the 7 payload bytes left
        #expect(stream.end(with: [3]) == nil)
    }

    @Test func randomFrameSequencesSurviveRandomSplits() {
        var generator = RobustnessTests.SeededGenerator(state: 7)
        for _ in 0..<200 {
            var bytes: [UInt8] = []
            var fragmenting = false
            for _ in 0..<Int.random(in: 1...12, using: &generator) {
                switch Int.random(in: 0..<4, using: &generator) {
                case 0:
                    bytes += Self.client(9, Int.random(in: 0...125, using: &generator))
                default:
                    let fin = Bool.random(using: &generator)
                    let opcode: UInt8 = fragmenting ? 0 : (Bool.random(using: &generator) ? 1 : 2)
                    let size = [0, 1, 125, 126, 65_535, 65_536].randomElement(using: &generator)!
                    bytes += Self.client(opcode, fin: fin, size)
                    fragmenting = !fin
                }
            }
            var relay = Relay(.client)
            var start = 0
            while start < bytes.count {
                let size = Int.random(in: 1...20_000, using: &generator)
                relay.feed(Array(bytes[start..<min(bytes.count, start + size)]))
                start += size
            }
            #expect(relay.failure == nil)
            #expect(relay.written == bytes)
        }
    }

    @Test func closeFramesAreEncodedAsRFC6455Says() {
        let expired = WebSocketCloseFrame.toClient(code: 1008, reason: "token_expired")
        #expect(expired == [0x88, 0x0F, 0x03, 0xF0] + Array("token_expired".utf8))
        let away = WebSocketCloseFrame.toUpstream(code: 1001, reason: "", maskingKey: [1, 2, 3, 4])
        #expect(away == [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE9 ^ 2])
        // The tracker itself accepts what the gateway injects, in each direction.
        var toUpstream = Relay(.client)
        toUpstream.feed(WebSocketCloseFrame.toUpstream(code: 1001))
        #expect(toUpstream.failure == nil && toUpstream.stream.senderClosed)
        var toClient = Relay(.upstream)
        toClient.feed(expired)
        #expect(toClient.failure == nil && toClient.stream.senderClosed)
    }

    @Test func longReasonsAreCutAtACharacterBoundary() {
        let reason = String(repeating: "é", count: 100)  // 200 bytes of two-byte characters
        let frame = WebSocketCloseFrame.toClient(code: 1011, reason: reason)
        #expect(frame[1] == 2 + 122)
        #expect(String(validating: frame[4...], as: UTF8.self) == String(repeating: "é", count: 61))
    }
}
