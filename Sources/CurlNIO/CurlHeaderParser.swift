/// Incremental parser for the header lines curl hands to CURLOPT_HEADERFUNCTION (one complete line per call,
/// including its CRLF): the status line, header lines, the blank line, again for every 1xx head, and finally
/// the trailer lines after the body: HTTP/2 trailing HEADERS and chunked HTTP/1.1 trailers each come as
/// `name: value` lines after the body, with no closing blank line, so only their position tells them from header
/// lines. They are collected in `trailers` and handed over when the transfer completes.
///
/// obs-fold continuation lines are joined to the previous header with a single space (RFC 9112 §5.2). Control
/// characters (other than HTAB) in a value, whitespace before the colon, a bad status line or a line without a
/// colon are protocol errors.
struct CurlHeaderParser {
    enum Event: Equatable {
        /// Line consumed, nothing to report.
        case none
        /// A complete informational (1xx) head was skipped.
        case informational(status: Int)
        /// The final head is complete.
        case head(CurlResponseHead)
        /// The line is malformed; the transfer must fail.
        case error(String)
    }

    private enum State {
        case statusLine
        case headers
        /// Final head delivered; further lines are trailers, collected in `trailers`.
        case done
    }

    private var state: State = .statusLine
    /// A `101 Switching Protocols` is the final head (a tunnel's answer to an Upgrade), not an informational one.
    var switchingProtocolsIsFinal = false
    private var status = 0
    private var headers: [CurlHeader] = []
    /// The trailer fields seen after the final head, in wire order (usually none: no storage).
    private(set) var trailers: [CurlHeader] = []

    /// Whether the final head has been produced.
    var isComplete: Bool {
        if case .done = self.state { return true }
        return false
    }

    mutating func parse(line: UnsafeRawBufferPointer) -> Event {
        var end = line.count
        // Strip the line terminator (CRLF or bare LF).
        if end > 0 && line[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > 0 && line[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let bytes = UnsafeRawBufferPointer(rebasing: line[0..<end])

        switch self.state {
        case .done:
            // Trailers end without a blank line; one that comes anyway says nothing.
            if bytes.isEmpty { return .none }
            if let problem = Self.appendField(bytes, to: &self.trailers) { return .error("trailer: \(problem)") }
            return .none
        case .statusLine:
            if bytes.isEmpty { return .none }  // tolerate stray blank lines between heads
            guard let status = Self.parseStatusLine(bytes) else {
                return .error("malformed status line")
            }
            self.status = status
            self.headers.removeAll(keepingCapacity: true)
            // One allocation for a typical head instead of growing 1 → 2 → 4 → 8 → 16.
            self.headers.reserveCapacity(16)
            self.state = .headers
            return .none
        case .headers:
            if bytes.isEmpty {
                if self.status < 200 && !(self.status == 101 && self.switchingProtocolsIsFinal) {
                    let informational = self.status
                    self.state = .statusLine
                    self.headers.removeAll(keepingCapacity: true)
                    return .informational(status: informational)
                }
                self.state = .done
                let head = CurlResponseHead(status: self.status, headers: self.headers)
                self.headers = []
                return .head(head)
            }
            if let problem = Self.appendField(bytes, to: &self.headers) { return .error(problem) }
            return .none
        }
    }

    /// Parses one `name: value` line (or an obs-fold continuation of the last one) onto `fields`; returns what is
    /// wrong with it, if anything.
    private static func appendField(_ bytes: UnsafeRawBufferPointer, to fields: inout [CurlHeader]) -> String? {
        let first = bytes[0]
        if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
            // obs-fold: continuation of the previous field's value.
            guard !fields.isEmpty else { return "continuation line without header" }
            let piece = Self.trim(bytes)
            guard Self.isValidValue(piece) else { return "invalid header value" }
            if !piece.isEmpty {
                let last = fields.count - 1
                if fields[last].value.isEmpty {
                    fields[last].value = String(decoding: piece, as: UTF8.self)
                } else {
                    fields[last].value += " " + String(decoding: piece, as: UTF8.self)
                }
            }
            return nil
        }
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")), colon > 0 else {
            return "header line without name"
        }
        let name = UnsafeRawBufferPointer(rebasing: bytes[0..<colon])
        guard name.allSatisfy(Self.isTokenByte) else { return "invalid header name" }
        let value = Self.trim(UnsafeRawBufferPointer(rebasing: bytes[(colon + 1)...]))
        guard Self.isValidValue(value) else { return "invalid header value" }
        fields.append(CurlHeader(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
        return nil
    }

    private static let httpPrefix: [UInt8] = Array("HTTP/".utf8)

    /// "HTTP/1.1 200 OK", "HTTP/1.1 200", "HTTP/2 200" → 200.
    static func parseStatusLine(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let prefix = Self.httpPrefix
        guard bytes.count >= prefix.count + 1 + 4 else { return nil }
        for i in 0..<prefix.count where bytes[i] != prefix[i] { return nil }
        var i = prefix.count
        // version: digits and dots
        let versionStart = i
        while i < bytes.count, bytes[i] == UInt8(ascii: ".") || (bytes[i] >= 0x30 && bytes[i] <= 0x39) { i += 1 }
        guard i > versionStart, i < bytes.count, bytes[i] == UInt8(ascii: " ") else { return nil }
        i += 1
        guard i + 3 <= bytes.count else { return nil }
        var status = 0
        for j in i..<(i + 3) {
            let b = bytes[j]
            guard b >= 0x30 && b <= 0x39 else { return nil }
            status = status * 10 + Int(b - 0x30)
        }
        i += 3
        guard i == bytes.count || bytes[i] == UInt8(ascii: " ") else { return nil }
        guard status >= 100 else { return nil }
        return status
    }

    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Field values: VCHAR, SP, HTAB, obs-text. No other control characters.
    static func isValidValue(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

    static func trim(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }
}
