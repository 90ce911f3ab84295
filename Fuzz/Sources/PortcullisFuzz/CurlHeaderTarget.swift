@testable import CurlNIO

/// The upstream's response head as libcurl hands it over: one line per call, each with its line ending. The input
/// is cut after every LF (a line without one at the end is passed as it is).
/// Invariants: a completed head has a three-digit final status, token header names and values without control
/// characters or surrounding whitespace (they are forwarded to the client); after it, lines are trailers: each is
/// collected or refused as a trailer error, and the trailers collected obey the same rules as header fields.
let curlHeaderTarget = FuzzTarget("curl-header", "CurlNIO CurlHeaderParser") { bytes in
    var parser = CurlHeaderParser()
    var start = 0
    var sawHead = false
    lines: while start < bytes.count {
        var end = start
        while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
        if end < bytes.count { end += 1 }
        let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        start = end
        let wasComplete = parser.isComplete
        let event = parser.parse(line: line)
        if wasComplete {
            switch event {
            case .none: continue
            case .error(let message): require(message.hasPrefix("trailer: "), "trailer error \(message)")
            default: require(false, "a line after the final head gave \(event)")
            }
            break lines
        }
        switch event {
        case .none:
            break
        case .informational(let status):
            require((100...199).contains(status), "informational status \(status)")
        case .head(let head):
            sawHead = true
            require((200...999).contains(head.status), "final status \(head.status)")
            for header in head.headers {
                require(
                    !header.name.isEmpty && header.name.utf8.allSatisfy { CurlHeaderParser.isTokenByte($0) },
                    "header name \(header.name.debugBytes)")
                require(
                    header.value.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }, "control byte in \(header.value.debugBytes)")
                require(
                    header.value.utf8.first.map { $0 != 0x20 && $0 != 0x09 } ?? true, "leading whitespace in \(header.value.debugBytes)")
                require(
                    header.value.utf8.last.map { $0 != 0x20 && $0 != 0x09 } ?? true, "trailing whitespace in \(header.value.debugBytes)")
            }
            require(parser.isComplete, "head delivered but parser not complete")
        case .error:
            return
        }
    }
    if !sawHead { require(!parser.isComplete, "complete without a head") }
    for field in parser.trailers {
        require(
            !field.name.isEmpty && field.name.utf8.allSatisfy { CurlHeaderParser.isTokenByte($0) }, "trailer name \(field.name.debugBytes)")
        require(field.value.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }, "control byte in \(field.value.debugBytes)")
    }
}
