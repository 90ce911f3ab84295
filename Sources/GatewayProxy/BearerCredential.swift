import NIOHTTP1

/// What the `Authorization` headers of a request carry, per DESIGN §5.
public enum BearerCredential: Equatable, Sendable {
    /// No Bearer credential: no header, or another scheme (`Basic ...`).
    case absent
    /// The token text after `Bearer` and its spaces.
    case token(Substring)
    /// `Bearer` with no token, a second credential in the header, or two `Authorization` headers → 400.
    case invalidRequest

    public static func extract(from headers: HTTPHeaders) -> BearerCredential {
        var found: String? = nil
        for (name, value) in headers where name.equalsIgnoringASCIICase("authorization") {
            if found != nil { return .invalidRequest }
            found = value
        }
        guard let value = found else { return .absent }
        return parse(value)
    }

    static func parse(_ value: String) -> BearerCredential {
        // On the UTF-8 bytes directly (the generic `UTF8View` slices cost more than the check itself).
        var bytes = value
        let tokenStart: Int? = bytes.withUTF8 { utf8 in
            // Scheme: case-insensitive "bearer" (RFC 9110 §11.1).
            guard utf8.count >= 6, zip(utf8.prefix(6), "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }) else {
                return -1
            }
            if utf8.count == 6 { return nil }
            guard utf8[6] == UInt8(ascii: " ") else {
                // "Bearerx ..." is another scheme; "Bearer\t..." is not the 1*SP the grammar allows.
                return utf8[6] == UInt8(ascii: "\t") ? nil : -1
            }
            var start = 7
            while start < utf8.count, utf8[start] == UInt8(ascii: " ") { start += 1 }
            if start == utf8.count { return nil }
            // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" — anything else, such as ","
            // or a space before a second credential, means the header does not hold exactly one Bearer token.
            for i in start..<utf8.count {
                switch utf8[i] {
                case UInt8(ascii: ","), UInt8(ascii: " "), UInt8(ascii: "\t"): return nil
                default: continue
                }
            }
            return start
        }
        guard let tokenStart else { return .invalidRequest }
        if tokenStart < 0 { return .absent }
        return .token(Substring(value.utf8[value.utf8.index(value.utf8.startIndex, offsetBy: tokenStart)...]))
    }
}
