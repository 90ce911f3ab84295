@testable import GatewayProxy

/// WebSocket frame tracking (`WebSocketStream`). The first byte picks the sender (bit 0), where a close frame is
/// requested (bits 1-7, scaled over the input) and the read size; the rest is the byte stream.
/// Invariants: what is relayed does not depend on how the stream is split into reads; it is always a prefix of the
/// input (plus the injected frame when one was requested), and what the tracker relays parses again as whole frames,
/// so an injected close never lands inside another frame.
let webSocketTarget = FuzzTarget("websocket", "GatewayProxy WebSocketStream") { bytes in
    var input = FuzzInput(bytes)
    let control = input.takeByte()
    let sender: WebSocketStream.Sender = control & 1 == 0 ? .client : .upstream
    let stream = input.array
    let readSize = Int(control >> 4) + 1
    let whole = WebSocketRelayRun(sender: sender, stream: stream, readSize: stream.count + 1, endAt: nil)
    let split = WebSocketRelayRun(sender: sender, stream: stream, readSize: readSize, endAt: nil)
    require(whole.written == split.written, "reads of \(readSize) relayed other bytes than one read")
    require(whole.failure == split.failure, "reads of \(readSize) failed as \(String(describing: split.failure))")
    require(Array(stream.prefix(whole.written.count)) == whole.written, "relayed bytes are not a prefix of the input")
    if whole.failure == nil {
        require(stream.count - whole.written.count < 14, "\(stream.count - whole.written.count) bytes held back")
    }

    let frame =
        sender == .client
        ? WebSocketCloseFrame.toUpstream(code: 1001) : WebSocketCloseFrame.toClient(code: 1008, reason: "token_expired")
    let endAt = stream.isEmpty ? 0 : Int(control >> 1) * stream.count / 127
    let ended = WebSocketRelayRun(sender: sender, stream: stream, readSize: readSize, endAt: endAt, frame: frame)
    guard ended.written.count >= frame.count, Array(ended.written.suffix(frame.count)) == frame else { return }
    // The frame went in: everything before it is relayed input, and the whole parses as complete frames.
    let before = Array(ended.written.dropLast(frame.count))
    require(Array(stream.prefix(before.count)) == before, "bytes before the injected frame are not the input's")
    let check = WebSocketRelayRun(sender: sender, stream: ended.written, readSize: ended.written.count + 1, endAt: nil)
    require(
        check.failure == nil || check.failure?.code == "websocket_frame_after_close",
        "relayed stream with the injected frame fails as \(String(describing: check.failure))")
    require(check.written == ended.written, "the injected frame is not whole frames after the relayed bytes")
}

/// Feeds a stream through a `WebSocketStream` the way the tunnel does (keeping an incomplete header for the next
/// read), optionally asking for `end(with: frame)` after `endAt` bytes.
struct WebSocketRelayRun {
    var written: [UInt8] = []
    var failure: WebSocketProtocolError? = nil

    init(sender: WebSocketStream.Sender, stream bytes: [UInt8], readSize: Int, endAt: Int?, frame: [UInt8] = []) {
        var stream = WebSocketStream(sender: sender)
        var held: [UInt8] = []
        var endRequested = endAt == nil
        var start = 0
        while true {
            if !endRequested, let endAt, start >= endAt {
                endRequested = true
                if let now = stream.end(with: frame) {
                    held = []
                    written += now
                }
            }
            guard start < bytes.count else { return }
            var stop = min(bytes.count, start + readSize)
            if !endRequested, let endAt { stop = min(stop, endAt) }
            let input = held + bytes[start..<stop]
            start = stop
            held = []
            switch input.withUnsafeBytes({ stream.receive($0) }) {
            case .forward(let count):
                written += input[..<count]
                held = Array(input[count...])
            case .forwardThenInject(let count, let frame):
                written += input[..<count] + frame
            case .fail(let count, let error):
                written += input[..<count]
                failure = error
                return
            case .discard:
                break
            }
        }
    }
}
