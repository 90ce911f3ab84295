import GatewayJSON
import NIOHTTP1

@testable import GatewayTokenService

/// Token-endpoint bodies (`/auth/login`, `/auth/token`, `/auth/revoke`): form-urlencoded or a JSON object of
/// strings, picked by the Content-Type the selector byte chooses. Invariants: every parameter is a non-empty name
/// with UTF-8 text without NUL (form); a form that parses survives re-encoding unchanged; a JSON body's members are
/// all strings.
let tokenBodyTarget = FuzzTarget("token-body", "GatewayServer OAuthParameters (form and JSON bodies)") { bytes in
    var input = FuzzInput(bytes)
    let selector = input.takeByte()
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: contentTypes[Int(selector) % contentTypes.count])
    if selector >= 0xF0 { headers.add(name: "Content-Type", value: "application/json") }  // two: always refused
    let body = input.array
    guard let parameters = try? OAuthParameters.parse(headers: headers, body: body) else { return }
    require(selector < 0xF0, "a body with two Content-Type fields was accepted")
    let isForm = contentTypes[Int(selector) % contentTypes.count].lowercased().contains("form")
    for (name, value) in parameters.values {
        if isForm {
            require(!name.isEmpty, "an empty parameter name")
            require(!name.utf8.contains(0) && !value.utf8.contains(0), "NUL in a form parameter")
        }
    }
    if isForm {
        var encoded: [UInt8] = []
        for (name, value) in parameters.values {
            if !encoded.isEmpty { encoded.append(UInt8(ascii: "&")) }
            encoded += formEncode(name) + [UInt8(ascii: "=")] + formEncode(value)
        }
        let again = try? OAuthParameters.parseForm(encoded)
        require(again?.values == parameters.values, "form parameters changed by re-encoding: \(parameters.values)")
    } else {
        guard case .object(let object)? = try? JSONParser.parse(body, limits: JSONLimits(maxDepth: 4, maxBytes: 64 * 1024)) else {
            require(false, "JSON parameters from a body that is not a JSON object")
            return
        }
        require(object.count == parameters.values.count, "JSON members and parameters differ in number")
        for member in object { require(parameters[member.name] == member.value.stringValue, "member \(member.name) changed") }
    }
}

private let contentTypes = [
    "application/x-www-form-urlencoded", "application/json", "application/x-www-form-urlencoded; charset=UTF-8",
    "Application/JSON ; charset=utf-8", "text/plain", "application/json;", " application/x-www-form-urlencoded",
]

/// Percent-encodes everything but unreserved characters (so `+`, `&`, `=` and `%` in values survive).
private func formEncode(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.append(byte)
        default:
            let hex = Array("0123456789ABCDEF".utf8)
            out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
        }
    }
    return out
}
