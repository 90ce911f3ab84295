/// The close frames the gateway writes into a tunnel of its own accord (RFC 6455 §5.5.1): to the client when the
/// token expires or the session is revoked (1008), to both sides at idle timeout or drain (1001), and on a protocol
/// error (1002).
package enum WebSocketCloseFrame {
    /// An unmasked close frame toward the client: a server never masks (§5.1).
    package static func toClient(code: UInt16, reason: String) -> [UInt8] {
        let payload = body(code: code, reason: reason)
        return [0x88, UInt8(payload.count)] + payload
    }

    /// A masked close frame toward the upstream, with a fresh random masking key: a client masks every frame (§5.1)
    /// and the key must not be predictable (§10.3).
    package static func toUpstream(code: UInt16, reason: String = "") -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let key = withUnsafeBytes(of: generator.next() as UInt32) { Array($0) }
        return toUpstream(code: code, reason: reason, maskingKey: key)
    }

    static func toUpstream(code: UInt16, reason: String, maskingKey key: [UInt8]) -> [UInt8] {
        precondition(key.count == 4)
        let payload = body(code: code, reason: reason)
        var frame: [UInt8] = [0x88, 0x80 | UInt8(payload.count)] + key
        frame.reserveCapacity(frame.count + payload.count)
        for (index, byte) in payload.enumerated() {
            frame.append(byte ^ key[index & 3])
        }
        return frame
    }

    /// Status code (big-endian) and reason, cut to the 123 bytes a control frame leaves for it (at a UTF-8 character
    /// boundary, so the reason stays valid UTF-8 as §5.5.1 requires).
    static func body(code: UInt16, reason: String) -> [UInt8] {
        var utf8 = Array(reason.utf8)
        if utf8.count > 123 {
            var cut = 123
            while cut > 0 && utf8[cut] & 0xC0 == 0x80 { cut -= 1 }
            utf8 = Array(utf8[..<cut])
        }
        return [UInt8(code >> 8), UInt8(code & 0xFF)] + utf8
    }
}
