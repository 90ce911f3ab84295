/// Strict base64url (RFC 4648 §5, no padding) as required for JWS compact serialisation, plus the standard
/// alphabet decoder used for PEM bodies. Neither decoder is lenient: no `=`, no whitespace, no foreign characters,
/// and non-zero unused trailing bits are refused, so that exactly one string encodes a given byte sequence.
public enum Base64URL {
    /// 0...63 for an alphabet character, 0xFF otherwise.
    static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    static let encodeTable: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Number of bytes a canonical encoding of `length` characters decodes to, or nil if the length is impossible.
    @inline(__always)
    static func decodedLength(_ length: Int) -> Int? {
        switch length & 3 {
        case 0: return length / 4 * 3
        case 2: return length / 4 * 3 + 1
        case 3: return length / 4 * 3 + 2
        default: return nil
        }
    }

    /// Decodes `src` (base64url, no padding) into `dst`, which must have room for `decodedLength(src.count)` bytes.
    /// Returns the number of bytes written, or nil if the input is not canonical base64url.
    static func decode(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) -> Int? {
        guard let outLength = decodedLength(src.count), dst.count >= outLength else { return nil }
        return decodeTable.withUnsafeBufferPointer { table -> Int? in
            var i = 0
            var o = 0
            let n = src.count
            while i + 4 <= n {
                let a = table[Int(src[i])]
                let b = table[Int(src[i + 1])]
                let c = table[Int(src[i + 2])]
                let d = table[Int(src[i + 3])]
                if (a | b | c | d) & 0xC0 != 0 { return nil }
                dst[o] = (a << 2) | (b >> 4)
                dst[o + 1] = (b << 4) | (c >> 2)
                dst[o + 2] = (c << 6) | d
                i += 4
                o += 3
            }
            switch n - i {
            case 0:
                break
            case 2:
                let a = table[Int(src[i])]
                let b = table[Int(src[i + 1])]
                if (a | b) & 0xC0 != 0 || b & 0x0F != 0 { return nil }
                dst[o] = (a << 2) | (b >> 4)
                o += 1
            case 3:
                let a = table[Int(src[i])]
                let b = table[Int(src[i + 1])]
                let c = table[Int(src[i + 2])]
                if (a | b | c) & 0xC0 != 0 || c & 0x03 != 0 { return nil }
                dst[o] = (a << 2) | (b >> 4)
                dst[o + 1] = (b << 4) | (c >> 2)
                o += 2
            default:
                return nil
            }
            return o
        }
    }

    /// Decodes a whole base64url string into a new array (load-time helper).
    static func decode(_ string: String) -> [UInt8]? {
        let chars = Array(string.utf8)
        guard let length = decodedLength(chars.count) else { return nil }
        var out = [UInt8](repeating: 0, count: length)
        let written = chars.withUnsafeBytes { src in out.withUnsafeMutableBytes { dst in decode(src, into: dst) } }
        guard written == length else { return nil }
        return out
    }

    /// Unpadded base64url of `bytes`.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        var out: [UInt8] = []
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= input.count {
            let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            out.append(encodeTable[Int(v >> 18 & 63)])
            out.append(encodeTable[Int(v >> 12 & 63)])
            out.append(encodeTable[Int(v >> 6 & 63)])
            out.append(encodeTable[Int(v & 63)])
            i += 3
        }
        switch input.count - i {
        case 1:
            let v = UInt32(input[i]) << 16
            out.append(encodeTable[Int(v >> 18 & 63)])
            out.append(encodeTable[Int(v >> 12 & 63)])
        case 2:
            let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
            out.append(encodeTable[Int(v >> 18 & 63)])
            out.append(encodeTable[Int(v >> 12 & 63)])
            out.append(encodeTable[Int(v >> 6 & 63)])
        default:
            break
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Standard-alphabet base64 with padding, for PEM bodies. Line breaks and spaces between characters are skipped;
/// anything else outside the alphabet is an error, and so are non-canonical padding and unused bits.
enum Base64Standard {
    static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        var chars: [UInt8] = []
        chars.reserveCapacity(text.count)
        var padding = 0
        for c in text {
            switch c {
            case UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: " "), UInt8(ascii: "\t"):
                continue
            case UInt8(ascii: "="):
                padding += 1
            case UInt8(ascii: "+"):
                if padding > 0 { return nil }
                chars.append(UInt8(ascii: "-"))
            case UInt8(ascii: "/"):
                if padding > 0 { return nil }
                chars.append(UInt8(ascii: "_"))
            case UInt8(ascii: "-"), UInt8(ascii: "_"):
                return nil
            default:
                if padding > 0 { return nil }
                chars.append(c)
            }
        }
        guard padding <= 2, (chars.count + padding) % 4 == 0 else { return nil }
        guard (padding == 0) == (chars.count % 4 == 0), padding == 0 || padding == 4 - chars.count % 4 else { return nil }
        guard let length = Base64URL.decodedLength(chars.count) else { return nil }
        var out = [UInt8](repeating: 0, count: length)
        let written = chars.withUnsafeBytes { src in out.withUnsafeMutableBytes { dst in Base64URL.decode(src, into: dst) } }
        guard written == length else { return nil }
        return out
    }

    static func encode(_ bytes: some Collection<UInt8>) -> String {
        var s = Array(Base64URL.encode(bytes).utf8)
        for i in s.indices {
            if s[i] == UInt8(ascii: "-") { s[i] = UInt8(ascii: "+") } else if s[i] == UInt8(ascii: "_") { s[i] = UInt8(ascii: "/") }
        }
        while s.count % 4 != 0 { s.append(UInt8(ascii: "=")) }
        return String(decoding: s, as: UTF8.self)
    }
}
