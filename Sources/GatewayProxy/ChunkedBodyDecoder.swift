/// Takes the chunked framing (RFC 9112 §7.1) off a body as its bytes arrive, in pieces of any size: what it returns
/// is the payload, and it says when the last chunk and the trailer section have gone by. Strict: a chunk size is
/// hexadecimal (at most 15 digits, so it fits in 60 bits), every line ends with CRLF, anything else is malformed.
/// Chunk extensions and trailer fields are read and dropped. A value type without I/O.
///
/// Used where the gateway relays an upstream answer that libcurl does not decode for it: a refused WebSocket
/// handshake, read from the raw connection, whose body the client's encoder frames again.
struct ChunkedBodyDecoder: Sendable, Equatable {
    struct Malformed: Error, Equatable {}

    private enum State: Sendable, Equatable {
        case size(value: UInt64, digits: Int)
        /// Whitespace after the size, which only a chunk extension may follow (RFC 9112's BWS before ";").
        case beforeExtension(value: UInt64)
        case chunkExtension(value: UInt64)
        case sizeLF(value: UInt64)
        case data(remaining: UInt64)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerLine
        case trailerLineLF
        case lastLF
        case done
    }

    private var state = State.size(value: 0, digits: 0)

    /// Whether the zero-size chunk and the trailer section's empty line have been read.
    var isComplete: Bool { state == .done }

    /// Appends the payload in `bytes` to `payload`. Bytes after the end of the body are ignored (the connection is
    /// closed after such an answer). Throws `Malformed` at the first byte the framing does not allow; the decoder
    /// is then unusable.
    mutating func decode(_ bytes: some Collection<UInt8>, into payload: inout [UInt8]) throws {
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if case .data(let remaining) = state {
                let available = bytes.distance(from: index, to: bytes.endIndex)
                let take = Int(min(remaining, UInt64(available)))
                let end = bytes.index(index, offsetBy: take)
                payload.append(contentsOf: bytes[index..<end])
                index = end
                state = remaining == UInt64(take) ? .dataCR : .data(remaining: remaining - UInt64(take))
                continue
            }
            try step(bytes[index])
            index = bytes.index(after: index)
        }
    }

    private mutating func step(_ byte: UInt8) throws {
        let cr = UInt8(ascii: "\r")
        let lf = UInt8(ascii: "\n")
        switch state {
        case .size(let value, let digits):
            if let digit = Self.hexValue(byte) {
                guard digits < 15 else { throw Malformed() }
                state = .size(value: value << 4 | UInt64(digit), digits: digits + 1)
            } else if digits > 0 && byte == UInt8(ascii: ";") {
                state = .chunkExtension(value: value)
            } else if digits > 0 && (byte == UInt8(ascii: " ") || byte == 0x09) {
                state = .beforeExtension(value: value)
            } else if digits > 0 && byte == cr {
                state = .sizeLF(value: value)
            } else {
                throw Malformed()
            }
        case .beforeExtension(let value):
            if byte == UInt8(ascii: ";") {
                state = .chunkExtension(value: value)
            } else if byte != UInt8(ascii: " ") && byte != 0x09 {
                throw Malformed()
            }
        case .chunkExtension(let value):
            // Anything up to the line's end but a bare LF or another control byte.
            if byte == cr {
                state = .sizeLF(value: value)
            } else if Self.isControl(byte) {
                throw Malformed()
            }
        case .sizeLF(let value):
            guard byte == lf else { throw Malformed() }
            state = value == 0 ? .trailerLineStart : .data(remaining: value)
        case .data:
            preconditionFailure("data is consumed in bulk by decode")
        case .dataCR:
            guard byte == cr else { throw Malformed() }
            state = .dataLF
        case .dataLF:
            guard byte == lf else { throw Malformed() }
            state = .size(value: 0, digits: 0)
        case .trailerLineStart:
            if byte == cr {
                state = .lastLF
            } else if Self.isControl(byte) {
                throw Malformed()
            } else {
                state = .trailerLine
            }
        case .trailerLine:
            if byte == cr {
                state = .trailerLineLF
            } else if Self.isControl(byte) {
                throw Malformed()
            }
        case .trailerLineLF:
            guard byte == lf else { throw Malformed() }
            state = .trailerLineStart
        case .lastLF:
            guard byte == lf else { throw Malformed() }
            state = .done
        case .done:
            break
        }
    }

    /// A control byte other than HTAB (a bare LF or CR among them).
    private static func isControl(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != 0x09) || byte == 0x7F
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
