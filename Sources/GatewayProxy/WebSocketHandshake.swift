import Crypto
import CurlNIO
import NIOHTTP1

/// The WebSocket opening handshake (RFC 6455 §4) as the gateway forwards it: which requests are upgrades, the request
/// written on the tunnel to the upstream, and the checks on the upstream's `101`.
public enum WebSocketHandshake {
    /// What a client's request asks for.
    public enum Kind: Equatable, Sendable {
        /// Not an Upgrade to `websocket`: an ordinary request.
        case none
        /// A valid opening handshake; `key` is its `Sec-WebSocket-Key`.
        case upgrade(key: String)
        /// An Upgrade to `websocket` that is not a valid handshake (not GET, not HTTP/1.1, no key, a body).
        case invalid
    }

    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Classifies a request head. Only `Upgrade: websocket` counts; other upgrades (h2c) are ordinary requests, whose
    /// `Upgrade` header the header policy drops.
    public static func classify(_ head: HTTPRequestHead, hasBody: Bool) -> Kind {
        // Runs for every request: the common case (no Upgrade field) costs a scan of the names and no allocation.
        guard head.headers.contains(name: "upgrade"),
            head.headers[canonicalForm: "upgrade"].contains(where: { $0.equalsIgnoringASCIICase("websocket") })
        else {
            return .none
        }
        guard head.method == .GET, head.version == .http1_1, !hasBody,
            head.headers[canonicalForm: "connection"].contains(where: { $0.equalsIgnoringASCIICase("upgrade") }),
            head.headers["sec-websocket-key"].count == 1, let key = head.headers.first(name: "sec-websocket-key"),
            isValidKey(key)
        else { return .invalid }
        return .upgrade(key: key)
    }

    /// A key is 16 random bytes in base64: 24 characters ending in `==`.
    static func isValidKey(_ key: String) -> Bool {
        let utf8 = key.utf8
        guard utf8.count == 24, key.hasSuffix("==") else { return false }
        return utf8.dropLast(2).allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                true
            default:
                false
            }
        }
    }

    /// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
    public static func accept(forKey key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Array((key + guid).utf8))
        return base64(Array(digest))
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i]
            let b1 = i + 1 < bytes.count ? bytes[i + 1] : 0
            let b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(i + 1 < bytes.count ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The request written on the tunnel: the authorised request (header policy applied, identity injected, which
    /// already carries `Sec-WebSocket-*`) plus the fields the policy drops as hop-by-hop and an upgrade needs, and the
    /// upstream's `Host` (libcurl would have written it for an ordinary transfer). Nil when a name or value could
    /// split the request.
    public static func upstreamRequest(_ request: CurlRequest) -> [UInt8]? {
        guard let host = authority(of: request.origin) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(512)
        out.append(contentsOf: "GET ".utf8)
        guard request.requestTarget.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        out.append(contentsOf: request.requestTarget.utf8)
        out.append(contentsOf: " HTTP/1.1\r\nHost: ".utf8)
        out.append(contentsOf: host.utf8)
        out.append(contentsOf: "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n".utf8)
        for header in request.headers {
            guard !header.name.isEmpty, header.name.utf8.allSatisfy(isTokenByte),
                header.value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) })
            else { return nil }
            out.append(contentsOf: header.name.utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: header.value.utf8)
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: "\r\n".utf8)
        return out
    }

    /// "http://host:port" → "host:port".
    static func authority(of origin: String) -> String? {
        let utf8 = Array(origin.utf8)
        var start: Int? = nil
        var i = 0
        while i + 2 < utf8.count {
            if utf8[i] == UInt8(ascii: ":") && utf8[i + 1] == UInt8(ascii: "/") && utf8[i + 2] == UInt8(ascii: "/") {
                start = i + 3
                break
            }
            i += 1
        }
        guard let start else { return nil }
        let authority = String(decoding: utf8[start...].prefix { $0 != UInt8(ascii: "/") }, as: UTF8.self)
        return authority.isEmpty ? nil : String(authority)
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// Whether a `101` completes the handshake for `key` (RFC 6455 §4.1: `Upgrade: websocket`, `Connection: Upgrade`
    /// and the right `Sec-WebSocket-Accept`). Anything else must not become a tunnel.
    public static func isValidSwitch(_ head: CurlResponseHead, key: String) -> Bool {
        guard head.status == 101 else { return false }
        var upgrade = false
        var connection = false
        var accepts: [String] = []
        for header in head.headers {
            if header.name.equalsIgnoringASCIICase("upgrade") {
                upgrade = upgrade || header.value.trimmingSpaces.equalsIgnoringASCIICase("websocket")
            } else if header.name.equalsIgnoringASCIICase("connection") {
                connection =
                    connection || header.value.split(separator: ",").contains { $0.trimmingSpaces.equalsIgnoringASCIICase("upgrade") }
            } else if header.name.equalsIgnoringASCIICase("sec-websocket-accept") {
                accepts.append(header.value)
            }
        }
        return upgrade && connection && accepts.count == 1 && accepts[0].trimmingSpaces == accept(forKey: key)
    }

    /// The `101` as the client gets it: the upstream's fields minus the hop-by-hop ones, then the two an upgrade needs.
    public static func clientSwitchBytes(_ head: CurlResponseHead, requestID: String) -> [UInt8] {
        var out = Array("HTTP/1.1 101 Switching Protocols\r\n".utf8)
        let headers = GatewayHandler.clientResponseHeaders(head.headers)
        for (name, value) in headers {
            out.append(contentsOf: name.utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: value.utf8)
            out.append(contentsOf: "\r\n".utf8)
        }
        if !headers.contains(name: "x-request-id") {
            out.append(contentsOf: "X-Request-Id: \(requestID)\r\n".utf8)
        }
        out.append(contentsOf: "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8)
        return out
    }
}
