@testable import GatewayProxy

/// A chunked body as an upstream sends it (the refusal of a WebSocket handshake, which the gateway de-chunks and frames
/// again for the client). The first byte picks the size of the pieces the rest is fed in.
/// Invariants: the payload, completion and failure do not depend on how the bytes are cut; the payload is never
/// longer than the input; a completely decoded body framed again as one chunk decodes to the same payload.
let chunkedTarget = FuzzTarget("chunked", "GatewayProxy ChunkedBodyDecoder") { bytes in
    guard let first = bytes.first else { return }
    let body = Array(bytes.dropFirst())
    let whole = decodeChunked(body, step: max(1, body.count))
    let pieces = decodeChunked(body, step: Int(first % 16) + 1)
    require(whole == pieces, "cut into pieces of \(Int(first % 16) + 1): \(pieces) instead of \(whole)")
    require(whole.payload.count <= body.count, "payload of \(whole.payload.count) bytes from \(body.count)")
    require(!(whole.complete && whole.failed), "complete and failed")
    if whole.complete {
        var framed: [UInt8] = []
        if !whole.payload.isEmpty {
            framed += Array(String(whole.payload.count, radix: 16).utf8) + [13, 10] + whole.payload + [13, 10]
        }
        framed += Array("0\r\n\r\n".utf8)
        let again = decodeChunked(framed, step: framed.count)
        require(again.complete && !again.failed && again.payload == whole.payload, "framed again: \(again)")
    }
}

private struct ChunkedOutcome: Equatable {
    var payload: [UInt8]
    var complete: Bool
    var failed: Bool
}

private func decodeChunked(_ body: [UInt8], step: Int) -> ChunkedOutcome {
    var decoder = ChunkedBodyDecoder()
    var payload: [UInt8] = []
    var start = 0
    while start < body.count {
        let end = min(body.count, start + step)
        do {
            try decoder.decode(body[start..<end], into: &payload)
        } catch {
            return ChunkedOutcome(payload: payload, complete: false, failed: true)
        }
        start = end
    }
    return ChunkedOutcome(payload: payload, complete: decoder.isComplete, failed: false)
}
