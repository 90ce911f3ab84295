import CurlNIO
import GatewayConfig
import GatewayJSON
import GatewayTokens
import NIOHTTP1

/// Turns a client's request headers into the header list sent upstream (DESIGN §5): hop-by-hop and
/// `Connection`-listed headers dropped, the identity namespace stripped in every spelling, framing left to libcurl,
/// forwarding headers replaced, then the verified identity injected. Built once per configuration.
public struct HeaderPolicy: Sendable {
    /// Normalised names (lower-case, `_` and `.` read as `-`) that are always dropped.
    private let dropped: Set<String>
    /// Normalised strip prefix (`x-auth-`), or "" for none.
    private let stripPrefix: String
    private let identity: IdentityHeaders
    private let forwardToken: Bool

    /// The fields that frame a message or describe one hop (RFC 9110 §7.6.1), which libcurl generates itself: they
    /// are never taken from a client under another spelling, nor from trailers.
    static let framingAndHopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization", "content-length", "host", "expect",
    ]

    /// What is always dropped from a client's request: the fields above, and the forwarding fields the gateway
    /// writes itself.
    static let hopByHopAndFraming = framingAndHopByHop.union([
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
    ])

    public init(identity: IdentityHeaders, forwardToken: Bool) {
        var dropped = Self.hopByHopAndFraming
        dropped.insert(Self.normalise(identity.subject))
        dropped.insert(Self.normalise(identity.scopes))
        dropped.insert(Self.normalise(identity.issuer))
        dropped.insert(Self.normalise(identity.clientCertSubject))
        for claim in identity.claims { dropped.insert(Self.normalise(claim.header)) }
        if !forwardToken { dropped.insert("authorization") }
        self.dropped = dropped
        self.stripPrefix = Self.normalise(identity.stripPrefix)
        self.identity = identity
        self.forwardToken = forwardToken
    }

    /// Header names compare case-insensitively, and many upstream stacks (CGI, WSGI, PHP, nginx) read `_` and `.`
    /// as `-`: compare in that folded form so `X_Auth.Subject` is caught like `X-Auth-Subject`.
    static func normalise(_ name: String) -> String {
        // Written straight into the new string (no intermediate array): names up to 15 bytes stay inline.
        let utf8 = name.utf8
        return String(unsafeUninitializedCapacity: utf8.count) { out in
            var i = 0
            for byte in utf8 {
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): out[i] = byte | 0x20
                case UInt8(ascii: "_"), UInt8(ascii: "."): out[i] = UInt8(ascii: "-")
                default: out[i] = byte
                }
                i += 1
            }
            return i
        }
    }

    /// Checks framing before anything is forwarded: a request with both `Content-Length` and
    /// `Transfer-Encoding`, differing or malformed lengths, a coding other than one plain `chunked`, control bytes
    /// in a value, or a framing or hop-by-hop field under another spelling (`Transfer_Encoding`, `Content.Length`)
    /// is refused (400).
    public static func validateFraming(_ headers: HTTPHeaders) -> Bool {
        var framing = MessageFraming(strictTransferEncoding: true)
        for (name, value) in headers {
            var bytes = value
            let clean = bytes.withUTF8 { utf8 in !utf8.contains { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F } }
            if !clean || isFramingLookalike(name) { return false }
            framing.add(name: name, value: value)
        }
        return framing.isUnambiguous
    }

    /// A name that only reads as a framing or hop-by-hop field once `_` and `.` are taken as `-`. We drop such
    /// headers anyway, but an upstream stack that folds them (CGI, WSGI, PHP) next to libcurl's own framing would
    /// see the message framed twice: refusing is the only answer that leaves no doubt, as for `CL` + `TE`.
    static func isFramingLookalike(_ name: String) -> Bool {
        // Every request header passes here: the set lookup only runs for names holding `_` or `.`.
        guard name.utf8.contains(where: { $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }) else { return false }
        return framingAndHopByHop.contains(normalise(name))
    }

    /// Trailer fields that must never appear after a chunked body (RFC 9110 §6.5.1): framing, routing and hop-by-hop
    /// fields, in any spelling. A request carrying one is refused rather than trusted.
    static func hasForbiddenTrailer(_ trailers: HTTPHeaders) -> Bool {
        trailers.contains { isForbiddenTrailer($0.name) }
    }

    /// One trailer field name that must not be relayed (see `hasForbiddenTrailer`); pseudo-header names included.
    static func isForbiddenTrailer(_ name: String) -> Bool {
        name.utf8.first == UInt8(ascii: ":") || framingAndHopByHop.contains(normalise(name))
    }

    /// The headers to send upstream.
    ///
    /// - Parameters:
    ///   - identity: the verified token, or nil on `auth: none` routes and anonymous `optional` requests.
    ///   - clientAddress: the peer's IP address, for `X-Forwarded-For`.
    ///   - requestID: the request's id (the client's valid `X-Request-Id`, or a generated one).
    ///   - connection: the client connection (`X-Forwarded-Proto`, the client certificate's subject).
    ///   - keepTrailersTE: a gRPC call: its `te: trailers` is kept (exactly that value; any other `te` is dropped), as
    ///     gRPC servers use it to detect proxies that would lose the trailers.
    public func upstreamHeaders(
        from headers: HTTPHeaders,
        identity verified: VerifiedToken?,
        clientAddress: String?,
        requestID: String,
        connection: ClientConnection = .plain,
        keepTrailersTE: Bool = false
    ) -> [CurlHeader] {
        var connectionListed: Set<String> = []
        for value in headers[canonicalForm: "connection"] {
            connectionListed.insert(Self.normalise(String(value)))
        }
        var out: [CurlHeader] = []
        out.reserveCapacity(headers.count + 8)
        var forwardedHost: String? = nil
        var hasRequestID = false
        for (name, value) in headers {
            let normalised = Self.normalise(name)
            if normalised == "host" { forwardedHost = value }
            if keepTrailersTE && normalised == "te" {
                if value.trimmingSpaces.equalsIgnoringASCIICase("trailers") && !connectionListed.contains("te") {
                    out.append(CurlHeader(name: "te", value: "trailers"))
                }
                continue
            }
            if dropped.contains(normalised) || connectionListed.contains(normalised) || normalised.hasPrefix("proxy-") {
                continue
            }
            if !stripPrefix.isEmpty && normalised.hasPrefix(stripPrefix) { continue }
            if normalised == "x-request-id" {
                if hasRequestID { continue }
                hasRequestID = true
                out.append(CurlHeader(name: name, value: requestID))
                continue
            }
            out.append(CurlHeader(name: name, value: value))
        }
        if !hasRequestID { out.append(CurlHeader(name: "X-Request-Id", value: requestID)) }
        if let clientAddress { out.append(CurlHeader(name: "X-Forwarded-For", value: clientAddress)) }
        out.append(CurlHeader(name: "X-Forwarded-Proto", value: connection.isSecure ? "https" : "http"))
        if let forwardedHost { out.append(CurlHeader(name: "X-Forwarded-Host", value: Self.encodeValue(forwardedHost))) }
        if let subject = connection.clientCertificateSubject {
            out.append(CurlHeader(name: identity.clientCertSubject, value: Self.encodeValue(subject)))
        }
        if let verified {
            out.append(CurlHeader(name: identity.subject, value: Self.encodeValue(verified.subject)))
            out.append(CurlHeader(name: identity.scopes, value: Self.encodeValue(verified.scopeText)))
            out.append(CurlHeader(name: identity.issuer, value: Self.encodeValue(verified.issuer)))
            for mapping in identity.claims {
                guard let value = verified.claims[mapping.claim], let text = Self.claimText(value) else { continue }
                out.append(CurlHeader(name: mapping.header, value: Self.encodeValue(text)))
            }
        }
        return out
    }

    /// Strings as-is, numbers and booleans as JSON, arrays comma-joined, objects as compact JSON (DESIGN §5).
    static func claimText(_ value: JSONValue) -> String? {
        switch value {
        case .null: nil
        case .string(let s): s
        case .array(let elements):
            elements.compactMap { element in
                if case .string(let s) = element { return s }
                return JSONWriter.string(element)
            }.joined(separator: ",")
        default: JSONWriter.string(value)
        }
    }

    /// Percent-encodes every byte outside printable ASCII, and `%` itself, so that CR, LF and NUL can never reach
    /// the upstream and the encoding stays reversible.
    static func encodeValue(_ value: String) -> String {
        let needsEncoding = value.utf8.contains { $0 < 0x20 || $0 > 0x7E || $0 == UInt8(ascii: "%") }
        guard needsEncoding else { return value }
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count * 3)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in value.utf8 {
            if byte < 0x20 || byte > 0x7E || byte == UInt8(ascii: "%") {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension StringProtocol {
    /// ASCII case-insensitive equality with an all-lower-case `lower`, without allocating (`lowercased()` would, for
    /// every header on the hot path).
    func equalsIgnoringASCIICase(_ lower: StaticString) -> Bool {
        let a = self.utf8
        guard a.count == lower.utf8CodeUnitCount else { return false }
        return lower.withUTF8Buffer { b in
            var i = 0
            for x in a {
                if (x >= 0x41 && x <= 0x5A ? x | 0x20 : x) != b[i] { return false }
                i += 1
            }
            return true
        }
    }
}

extension StringProtocol {
    /// ASCII case-insensitive equality of two names, without allocating.
    func equalsIgnoringASCIICase(other: some StringProtocol) -> Bool {
        let a = self.utf8
        let b = other.utf8
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in
            (x >= 0x41 && x <= 0x5A ? x | 0x20 : x) == (y >= 0x41 && y <= 0x5A ? y | 0x20 : y)
        }
    }

    var trimmingSpaces: Substring {
        var s = Substring(self)
        while let first = s.first, first == " " || first == "\t" { s.removeFirst() }
        while let last = s.last, last == " " || last == "\t" { s.removeLast() }
        return s
    }
}

/// The framing fields of one HTTP message, collected header by header, to tell whether its length is unambiguous:
/// no `Content-Length` together with `Transfer-Encoding` and no two different lengths (RFC 9112 §6.3). Shared by
/// the request check and the upstream-response check, where smuggling and desync start.
struct MessageFraming {
    /// Requests: only a single plain `chunked` is accepted; `xchunked`, `chunked, identity` or two lines are not.
    let strictTransferEncoding: Bool
    private var length: Substring? = nil
    private var chunked = false
    private var malformed = false

    init(strictTransferEncoding: Bool) {
        self.strictTransferEncoding = strictTransferEncoding
    }

    var isUnambiguous: Bool { !malformed && !(chunked && length != nil) }

    mutating func add(name: String, value: String) {
        switch name.utf8.count {
        case 14 where name.equalsIgnoringASCIICase("content-length"):
            // Each comma-separated part (empty ones included), without building an array of them.
            var rest = Substring(value)
            while true {
                let comma = rest.utf8.firstIndex(of: UInt8(ascii: ","))
                let trimmed = rest[..<(comma ?? rest.endIndex)].trimmingSpaces
                if trimmed.isEmpty || !trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { malformed = true }
                if let length, length != trimmed { malformed = true }
                length = trimmed
                guard let comma else { break }
                rest = rest[rest.utf8.index(after: comma)...]
            }
        case 17 where name.equalsIgnoringASCIICase("transfer-encoding"):
            if strictTransferEncoding && (chunked || value.trimmingSpaces.lowercased() != "chunked") { malformed = true }
            chunked = true
        default:
            break
        }
    }
}
