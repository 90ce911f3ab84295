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
        let utf8 = value.utf8
        // Scheme: case-insensitive "bearer" (RFC 9110 §11.1).
        guard utf8.count >= 6, utf8.prefix(6).elementsEqual("bearer".utf8, by: { $0 | 0x20 == $1 }) else {
            return .absent
        }
        let afterScheme = value.utf8.dropFirst(6)
        if afterScheme.isEmpty { return .invalidRequest }
        guard afterScheme.first == UInt8(ascii: " ") else {
            // "Bearerx ..." is another scheme; "Bearer\t..." is not the 1*SP the grammar allows.
            return afterScheme.first == UInt8(ascii: "\t") ? .invalidRequest : .absent
        }
        let token = afterScheme.drop { $0 == UInt8(ascii: " ") }
        if token.isEmpty { return .invalidRequest }
        // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" — anything else, such as ","
        // or a space before a second credential, means the header does not hold exactly one Bearer token.
        for byte in token {
            switch byte {
            case UInt8(ascii: ","), UInt8(ascii: " "), UInt8(ascii: "\t"): return .invalidRequest
            default: continue
            }
        }
        return .token(Substring(token))
    }
}
