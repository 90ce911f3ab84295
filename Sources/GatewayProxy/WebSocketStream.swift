/// One direction of a WebSocket tunnel, followed by frame headers only (RFC 6455 §5.2): payload bytes are counted,
/// never copied, unmasked or parsed, so permessage-deflate and every other extension pass through untouched.
///
/// The gateway needs frame boundaries for one reason: to end a tunnel cleanly when the token that opened it expires
/// or its session is revoked, it writes a close frame into each direction, and a frame written in the middle of
/// another frame's payload would corrupt the stream. So a direction can be asked to `end(with:)` a frame, which goes
/// out at the next boundary, after which the direction's later bytes are discarded.
///
/// A header is forwarded only once it is complete and valid: `receive` reports how many leading bytes of its input may
/// be relayed, and a trailing incomplete header (at most 13 bytes) stays with the caller, which presents it again in
/// front of the next bytes, the way a `ByteToMessageDecoder` keeps what it has not consumed. That way a bad header is
/// never relayed, and a held partial header is itself a boundary where a close frame can go in at once.
///
/// A pure value type: no I/O, unit-tested byte by byte.
package struct WebSocketStream: Sendable {
    /// Which peer writes this direction's bytes. A client MUST mask every frame and a server MUST NOT (§5.1).
    package enum Sender: Sendable {
        case client
        case upstream
    }

    package enum Step: Equatable, Sendable {
        /// Relay this many bytes from the start of the input. Any bytes after them are an incomplete frame header:
        /// keep them and present them again, in front of the next bytes.
        case forward(Int)
        /// Relay `count` bytes, then write `frame` (the injected close frame). The rest of the input and every
        /// later input are discarded.
        case forwardThenInject(count: Int, frame: [UInt8])
        /// Relay `count` bytes (the complete frames before the bad header), then end the tunnel with
        /// `error.closeCode`. The bad header and everything after it are never relayed.
        case fail(count: Int, error: WebSocketProtocolError)
        /// The direction has ended (a close frame was injected, or it failed): drop the input.
        case discard
    }

    enum State: Equatable, Sendable {
        /// Between frames: the next byte starts a header.
        case boundary
        /// In a frame's payload, with this many bytes still to pass.
        case payload(remaining: UInt64, isClose: Bool)
        /// A close frame was injected, or the sender broke the protocol: nothing more passes.
        case ended
    }

    package let sender: Sender
    private(set) var state: State = .boundary
    /// A data message was started with FIN clear and its last fragment has not passed yet.
    private(set) var inFragmentedMessage = false
    /// A complete close frame from the sender has passed.
    package private(set) var senderClosed = false
    /// A frame to write at the next boundary (`end(with:)` while inside a frame).
    private var pendingFrame: [UInt8]? = nil

    package init(sender: Sender) {
        self.sender = sender
    }

    /// True once the injected frame went out (or is due now), or the sender broke the protocol: later bytes are
    /// discarded.
    package var isEnded: Bool { state == .ended }

    /// True between frames (nothing of the next frame relayed yet).
    package var isAtFrameBoundary: Bool { state == .boundary }

    /// Asks to end this direction with `frame` at the next frame boundary. Returns the frame when the direction sits
    /// at a boundary now: write it at once, and drop any incomplete header the caller holds. Returns nil when the
    /// frame will come out of a later `receive` as `.forwardThenInject`, or when the direction has already ended.
    package mutating func end(with frame: [UInt8]) -> [UInt8]? {
        switch state {
        case .ended:
            return nil
        case .boundary:
            state = .ended
            pendingFrame = nil
            return frame
        case .payload:
            if pendingFrame == nil { pendingFrame = frame }
            return nil
        }
    }

    /// Scans bytes that arrived from this direction's sender, in order; see `Step` for what to do with them.
    package mutating func receive(_ bytes: UnsafeRawBufferPointer) -> Step {
        var offset = 0
        while offset < bytes.count {
            switch state {
            case .ended:
                // Only reached at offset 0: every step that ends the direction returns at once.
                return .discard
            case .payload(let remaining, let isClose):
                let available = UInt64(bytes.count - offset)
                if available < remaining {
                    state = .payload(remaining: remaining - available, isClose: isClose)
                    return .forward(bytes.count)
                }
                offset += Int(remaining)
                frameCompleted(isClose: isClose)
            case .boundary:
                if let frame = pendingFrame {
                    pendingFrame = nil
                    state = .ended
                    return .forwardThenInject(count: offset, frame: frame)
                }
                switch Self.parseHeader(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
                case .incomplete:
                    return .forward(offset)
                case .header(let header):
                    if let error = check(header) {
                        state = .ended
                        pendingFrame = nil
                        return .fail(count: offset, error: error)
                    }
                    offset += header.length
                    if header.opcode < 8 {
                        inFragmentedMessage = !header.fin
                    }
                    if header.payloadLength == 0 {
                        frameCompleted(isClose: header.opcode == 8)
                    } else {
                        state = .payload(remaining: header.payloadLength, isClose: header.opcode == 8)
                    }
                }
            }
        }
        // The input ended exactly at a boundary: a pending frame goes out now rather than at the next read, which
        // may never come from a sender that has gone quiet.
        if state == .boundary, let frame = pendingFrame {
            pendingFrame = nil
            state = .ended
            return .forwardThenInject(count: offset, frame: frame)
        }
        return .forward(offset)
    }

    private mutating func frameCompleted(isClose: Bool) {
        state = .boundary
        if isClose { senderClosed = true }
    }

    /// Validates a complete header against RFC 6455 §5 in the state this direction is in.
    private func check(_ header: Header) -> WebSocketProtocolError? {
        if senderClosed {
            // §5.5.1: after a Close frame the sender sends nothing more.
            return .init(code: "websocket_frame_after_close")
        }
        switch (sender, header.masked) {
        case (.client, false): return .init(code: "websocket_unmasked_client_frame")
        case (.upstream, true): return .init(code: "websocket_masked_server_frame")
        default: break
        }
        if header.payloadLength >> 63 != 0 {
            return .init(code: "websocket_bad_length")
        }
        switch header.opcode {
        case 0:
            if !inFragmentedMessage { return .init(code: "websocket_unexpected_continuation") }
        case 1, 2:
            if inFragmentedMessage { return .init(code: "websocket_interleaved_message") }
        case 8, 9, 10:
            // §5.5: control frames may sit between fragments, but are never fragmented and carry at most 125 bytes.
            if !header.fin { return .init(code: "websocket_fragmented_control_frame") }
            if header.payloadLength > 125 { return .init(code: "websocket_control_frame_too_long") }
            // §5.5.1: a close body is empty or starts with a two-byte status code.
            if header.opcode == 8 && header.payloadLength == 1 { return .init(code: "websocket_bad_close_frame") }
        default:
            return .init(code: "websocket_reserved_opcode")
        }
        return nil
    }

    struct Header: Equatable {
        var fin: Bool
        var opcode: UInt8
        var masked: Bool
        var payloadLength: UInt64
        /// Header bytes, masking key included.
        var length: Int
    }

    enum HeaderParse: Equatable {
        case incomplete
        case header(Header)
    }

    /// Reads one frame header (2 to 14 bytes) from the start of `bytes`. RSV bits are left alone: an extension
    /// negotiated end to end (permessage-deflate sets RSV1) is none of the gateway's business.
    static func parseHeader(_ bytes: UnsafeRawBufferPointer) -> HeaderParse {
        guard bytes.count >= 2 else { return .incomplete }
        let first = bytes[0]
        let second = bytes[1]
        let masked = second & 0x80 != 0
        let length7 = UInt64(second & 0x7F)
        let extra = length7 == 126 ? 2 : length7 == 127 ? 8 : 0
        let total = 2 + extra + (masked ? 4 : 0)
        guard bytes.count >= total else { return .incomplete }
        var length = length7
        if extra > 0 {
            length = 0
            for index in 2..<(2 + extra) {
                length = length << 8 | UInt64(bytes[index])
            }
        }
        return .header(
            Header(fin: first & 0x80 != 0, opcode: first & 0x0F, masked: masked, payloadLength: length, length: total))
    }
}
