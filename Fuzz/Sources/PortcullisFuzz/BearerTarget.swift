import NIOHTTP1

@testable import GatewayProxy

/// Bearer extraction (DESIGN §5) from the request's header lines. The input is split at LF into header lines
/// `name:value` (names of Authorization in several spellings are likely, since seeds carry them).
/// Invariants: two Authorization fields are always `invalid_request`; a token is one b64token-like word that is the
/// exact tail of the only Authorization value, after a case-insensitive `Bearer` and spaces.
let bearerTarget = FuzzTarget("bearer", "GatewayProxy BearerCredential") { bytes in
    var headers = HTTPHeaders()
    for line in FuzzInput(bytes).parts(separator: UInt8(ascii: "\n")) {
        let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
        // NIO's decoder only produces ASCII names (HTTPHeaders traps on others), so only those are possible here.
        guard line[..<colon].allSatisfy({ $0 < 0x80 }) else { continue }
        let name = String(decoding: line[..<colon], as: UTF8.self)
        let value = colon < line.endIndex ? String(decoding: line[(colon + 1)...], as: UTF8.self) : ""
        headers.add(name: name, value: value)
    }
    let authorization = headers.filter { asciiCaseInsensitivePrefix($0.name, "authorization") && $0.name.utf8.count == 13 }.map(\.value)
    let credential = BearerCredential.extract(from: headers)
    if authorization.count > 1 { require(credential == .invalidRequest, "two Authorization fields gave \(credential)") }
    if authorization.isEmpty { require(credential == .absent, "no Authorization field gave \(credential)") }
    guard case .token(let token) = credential else { return }
    require(authorization.count == 1, "a token from \(authorization.count) Authorization fields")
    let value = authorization[0]
    require(!token.isEmpty, "empty token")
    require(
        !token.utf8.contains { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\t") },
        "token \(String(token).debugBytes) holds a separator")
    require(asciiCaseInsensitivePrefix(value, "bearer "), "token from \(value.debugBytes) without the Bearer scheme")
    require(value.utf8.reversed().starts(with: token.utf8.reversed()), "token is not the tail of \(value.debugBytes)")
    let between = value.utf8.dropFirst(6).dropLast(token.utf8.count)
    require(!between.isEmpty && between.allSatisfy { $0 == UInt8(ascii: " ") }, "scheme and token separated by \(Array(between))")
}

/// `text` starts with `lowercasedPrefix` ignoring ASCII case only (Unicode case mapping would change lengths).
func asciiCaseInsensitivePrefix(_ text: String, _ lowercasedPrefix: String) -> Bool {
    text.utf8.count >= lowercasedPrefix.utf8.count
        && zip(text.utf8, lowercasedPrefix.utf8).allSatisfy { pair in
            let folded = pair.0 >= UInt8(ascii: "A") && pair.0 <= UInt8(ascii: "Z") ? pair.0 | 0x20 : pair.0
            return folded == pair.1
        }
}
