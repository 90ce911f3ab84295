import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Follows the request byte stream in front of NIO's HTTP decoder just far enough to see what the decoder never
/// reports: the size each chunk line declares. A chunk that would take the body past `max_body_bytes` is refused
/// before the decoder reads its size line, so the bytes after it (a client's next request, in the smuggling corpus)
/// are never decoded as body and never reach the upstream.
///
/// The decoder stays the authority on framing: the guard splits reads at each head end so that the decoder hands
/// over that head's framing (`headDecoded`) before the body is scanned, and on anything it does not expect — a
/// malformed line, a head the decoder did not produce, a framing it cannot follow — it stops following for the rest
/// of the connection (`isFollowing` false) and lets the decoder refuse what it refuses. It can only ever say "too
/// large", never accept anything the decoder would not. A pure value type: no I/O, unit-tested byte by byte.
public struct ChunkedBodyGuard: Sendable {
    /// A decoded request head's body framing, as far as the guard needs it.
    public enum Framing: Sendable, Equatable {
        case none
        case length(Int64)
        /// Chunked, with at most `limit` body bytes in total.
        case chunked(limit: Int64)
        /// Something the guard does not follow (the decoder or the policy refuses it, or it is an upgrade).
        case unknown
    }

    public enum Outcome: Sendable, Equatable {
        /// Every byte scanned may go to the decoder.
        case consumed
        /// A request head ends after this many of the scanned bytes: pass them to the decoder, call `headDecoded`
        /// with the framing of the head it produced, then scan the rest.
        case headEnd(Int)
        /// A chunk line declares more than the limit allows: pass nothing more to the decoder.
        case chunkTooLarge
    }

    enum State: Sendable, Equatable {
        /// In a head; the last four bytes, to find `\r\n\r\n` across reads.
        case head(window: UInt32)
        /// A head ended; waiting for `headDecoded`.
        case awaitingFraming
        case fixed(remaining: Int64)
        case chunkSize(value: UInt64, digits: Int)
        case chunkExtension
        case chunkSizeLF
        case chunkData(remaining: Int64)
        case chunkDataCR
        case chunkDataLF
        case trailerLineStart
        case trailerLine
        case trailerEndLF
        /// Lost track (or told to stand aside): everything passes unscanned.
        case standingAside
    }

    private(set) var state: State
    /// The current chunked body's limit, the bytes its chunk lines declared so far, and the chunk being read.
    private var limit: Int64 = 0
    private var declared: Int64 = 0
    private var chunk: Int64 = 0

    /// - Parameter following: false for a guard that never scans (a listener without a body limit of its own).
    public init(following: Bool = true) {
        state = following ? .head(window: 0) : .standingAside
    }

    public var isFollowing: Bool { state != .standingAside }

    /// The framing of a decoded head, read the way the decoder and the policy read it; anything unusual is
    /// `.unknown` (such a request is refused or closes the connection anyway).
    public static func framing(of headers: HTTPHeaders, limit: Int64) -> Framing {
        var length: Int64? = nil
        var chunked = false
        var unusual = false
        for (name, value) in headers {
            switch name.utf8.count {
            case 14 where name.equalsIgnoringASCIICase("content-length"):
                if length != nil { unusual = true }
                length = Int64(value.trimmingSpaces)
                if length == nil { unusual = true }
            case 17 where name.equalsIgnoringASCIICase("transfer-encoding"):
                if chunked || !value.trimmingSpaces.equalsIgnoringASCIICase("chunked") { unusual = true }
                chunked = true
            case 7 where name.equalsIgnoringASCIICase("upgrade"):
                unusual = true  // the decoder stops after an upgrade request
            default:
                break
            }
        }
        if unusual || (chunked && length != nil) { return .unknown }
        if chunked { return .chunked(limit: limit) }
        if let length { return length == 0 ? .none : .length(length) }
        return .none
    }

    /// After `.headEnd`: the framing of the head the decoder produced from those bytes, or nil if it produced none.
    public mutating func headDecoded(_ framing: Framing?) {
        guard state == .awaitingFraming else {
            state = .standingAside
            return
        }
        switch framing {
        case .none?: state = .head(window: 0)
        case .length(let n)?: state = .fixed(remaining: n)
        case .chunked(let limit)?:
            self.limit = limit
            declared = 0
            state = .chunkSize(value: 0, digits: 0)
        case .unknown?, nil: state = .standingAside
        }
    }

    public mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        var i = 0
        let count = bytes.count
        while i < count {
            switch state {
            case .standingAside:
                return .consumed
            case .awaitingFraming:
                // Bytes scanned before the head's framing was given: the caller skipped a step.
                state = .standingAside
                return .consumed
            case .head(var window):
                // Every request head passes here: jump from LF to LF with memchr (vectorised) and look only at the
                // bytes before each one, instead of shifting every byte through the window.
                let base = bytes.baseAddress!
                while i < count {
                    guard let found = memchr(base + i, 0x0A, count - i) else {
                        for k in max(i, count - 3)..<count { window = window << 8 | UInt32(bytes[k]) }
                        i = count
                        break
                    }
                    let lf = UnsafeRawPointer(found) - base
                    for k in max(i, lf - 3)...lf { window = window << 8 | UInt32(bytes[k]) }
                    i = lf + 1
                    if window == 0x0D0A_0D0A {
                        state = .awaitingFraming
                        return .headEnd(i)
                    }
                }
                state = .head(window: window)
            case .fixed(let remaining):
                let n = min(remaining, Int64(count - i))
                i += Int(n)
                state = n == remaining ? .head(window: 0) : .fixed(remaining: remaining - n)
            case .chunkData(let remaining):
                let n = min(remaining, Int64(count - i))
                i += Int(n)
                state = n == remaining ? .chunkDataCR : .chunkData(remaining: remaining - n)
            case .chunkSize(let value, let digits):
                let byte = bytes[i]
                i += 1
                if let digit = Self.hexValue(byte) {
                    // More than 16 digits overflows: the decoder refuses that itself (400).
                    guard digits < 16 else { return standAside() }
                    state = .chunkSize(value: value << 4 | UInt64(digit), digits: digits + 1)
                    continue
                }
                guard digits > 0, byte == UInt8(ascii: ";") || byte == UInt8(ascii: "\r") else { return standAside() }
                if value > UInt64(max(0, limit - declared)) { return .chunkTooLarge }
                declared += Int64(value)
                chunk = Int64(value)
                state = byte == UInt8(ascii: ";") ? .chunkExtension : .chunkSizeLF
            case .chunkExtension:
                let byte = bytes[i]
                i += 1
                if byte == UInt8(ascii: "\r") {
                    state = .chunkSizeLF
                } else if byte == UInt8(ascii: "\n") {
                    return standAside()
                }
            case .chunkSizeLF:
                guard bytes[i] == UInt8(ascii: "\n") else { return standAside() }
                i += 1
                state = chunk == 0 ? .trailerLineStart : .chunkData(remaining: chunk)
            case .chunkDataCR:
                guard bytes[i] == UInt8(ascii: "\r") else { return standAside() }
                i += 1
                state = .chunkDataLF
            case .chunkDataLF:
                guard bytes[i] == UInt8(ascii: "\n") else { return standAside() }
                i += 1
                state = .chunkSize(value: 0, digits: 0)
            case .trailerLineStart:
                state = bytes[i] == UInt8(ascii: "\r") ? .trailerEndLF : .trailerLine
                i += 1
            case .trailerLine:
                if bytes[i] == UInt8(ascii: "\n") { state = .trailerLineStart }
                i += 1
            case .trailerEndLF:
                guard bytes[i] == UInt8(ascii: "\n") else { return standAside() }
                i += 1
                state = .head(window: 0)
            }
        }
        return .consumed
    }

    private mutating func standAside() -> Outcome {
        state = .standingAside
        return .consumed
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Raised in front of the decoder when a chunk line declares more than `max_body_bytes` allows (see
/// `ChunkedBodyGuard`); the gateway handler answers 413 `body_too_large`.
public struct ChunkedBodyTooLargeError: Error, Sendable, Hashable {
    /// The stable code, as in the answer's `reason`.
    public let code = "body_too_large"
    public init() {}
}
