import GatewayJSON
import GatewaySessions
import NIOHTTP1

/// The parameters of a token-endpoint request body: `application/x-www-form-urlencoded` (RFC 6749 §3.2) or a JSON
/// object of strings. A parameter given twice, a bad percent-escape, bytes that are not UTF-8 or a non-string JSON
/// member are `invalid_request` (RFC 6749 §3.1: parameters must not be included more than once).
package struct OAuthParameters: Sendable {
    private(set) var values: [String: String] = [:]

    package subscript(name: String) -> String? { values[name] }

    package static func parse(headers: HTTPHeaders, body: [UInt8]) throws(TokenServiceError) -> OAuthParameters {
        let contentTypes = headers[canonicalForm: "content-type"]
        guard contentTypes.count == 1 else {
            throw .invalidRequest("Content-Type must be application/x-www-form-urlencoded or application/json")
        }
        let mediaType = (contentTypes[0].split(separator: ";", maxSplits: 1).first ?? "")
            .filter { $0 != " " && $0 != "\t" }.lowercased()
        switch mediaType {
        case "application/x-www-form-urlencoded": return try parseForm(body)
        case "application/json": return try parseJSON(body)
        default: throw .invalidRequest("Content-Type must be application/x-www-form-urlencoded or application/json")
        }
    }

    static func parseForm(_ body: [UInt8]) throws(TokenServiceError) -> OAuthParameters {
        var parameters = OAuthParameters()
        for pair in body.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let name = try decode(parts[0])
            let value = try decode(parts.count > 1 ? parts[1] : [])
            guard !name.isEmpty else { continue }
            try parameters.add(name, value)
        }
        return parameters
    }

    static func parseJSON(_ body: [UInt8]) throws(TokenServiceError) -> OAuthParameters {
        let document: JSONValue
        do {
            document = try JSONParser.parse(body, limits: JSONLimits(maxDepth: 4, maxBytes: 64 * 1024))
        } catch {
            throw .invalidRequest("The body is not valid JSON (\(error.code.rawValue) at \(error.path.jsonPathString))")
        }
        guard let object = document.objectValue else { throw .invalidRequest("The JSON body must be an object") }
        var parameters = OAuthParameters()
        for member in object {
            guard let value = member.value.stringValue else {
                throw .invalidRequest("The JSON member \(JSONWriter.quoted(member.name)) must be a string")
            }
            try parameters.add(member.name, value)
        }
        return parameters
    }

    private mutating func add(_ name: String, _ value: String) throws(TokenServiceError) {
        guard values.updateValue(value, forKey: name) == nil else {
            throw .invalidRequest("The parameter \(JSONWriter.quoted(name)) is given more than once")
        }
    }

    /// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the result must be UTF-8 without
    /// NUL.
    static func decode(_ bytes: ArraySlice<UInt8>) throws(TokenServiceError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let byte = bytes[i]
            if byte == UInt8(ascii: "+") {
                out.append(0x20)
            } else if byte == UInt8(ascii: "%") {
                guard bytes.endIndex - i > 2, let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2]) else {
                    throw .invalidRequest("The form body has an invalid percent-escape")
                }
                out.append(high << 4 | low)
                i += 2
            } else {
                out.append(byte)
            }
            i += 1
        }
        guard !out.contains(0), let string = String(validating: out, as: UTF8.self) else {
            throw .invalidRequest("The form body is not valid UTF-8 text")
        }
        return string
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
