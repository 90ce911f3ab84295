/// Finds and parses an HTTP/1.1 response head at the start of raw bytes read from a `CurlTunnel` (the upstream's
/// answer to a request the caller wrote itself), with the same rules as for transfers (`CurlHeaderParser`), except
/// that `101 Switching Protocols` is a final head. Informational heads before it are skipped.
public enum CurlResponseHeadScanner {
    public enum Outcome: Sendable, Equatable {
        /// No complete head yet: read more (unless `bytes` already hold `maxHeadBytes`).
        case incomplete
        /// The head, and how many bytes it took (what follows is body or tunnelled data).
        case head(CurlResponseHead, consumed: Int)
        /// Not a valid response head, or longer than the limit.
        case invalid(String)
    }

    /// - Parameter maxHeadBytes: a head (with any informational heads before it) longer than this is invalid.
    public static func scan(_ bytes: UnsafeRawBufferPointer, maxHeadBytes: Int = 64 * 1024) -> Outcome {
        var parser = CurlHeaderParser()
        parser.switchingProtocolsIsFinal = true
        var lineStart = 0
        var i = 0
        while i < bytes.count {
            if i >= maxHeadBytes { return .invalid("response head too large") }
            if bytes[i] == UInt8(ascii: "\n") {
                let line = UnsafeRawBufferPointer(rebasing: bytes[lineStart...i])
                switch parser.parse(line: line) {
                case .none, .informational:
                    break
                case .error(let message):
                    return .invalid(message)
                case .head(let head):
                    return .head(head, consumed: i + 1)
                }
                lineStart = i + 1
            }
            i += 1
        }
        return bytes.count >= maxHeadBytes ? .invalid("response head too large") : .incomplete
    }
}
