import GatewayJSON

/// Replaces `${NAME}` in every string of the document with the environment variable NAME. An unset variable is an
/// error at that string's path; `$${` stands for a literal `${`.
enum EnvironmentSubstitution {
    static func apply(_ value: JSONValue, environment: [String: String], path: [JSONPathComponent], sink: ErrorSink) -> JSONValue {
        switch value {
        case .string(let s):
            guard s.contains("${") else { return value }
            return .string(substitute(s, environment: environment, path: path, sink: sink))
        case .array(let elements):
            return .array(elements.enumerated().map { apply($1, environment: environment, path: path + [.index($0)], sink: sink) })
        case .object(let object):
            return .object(
                JSONObject(
                    object.members.map { ($0.name, apply($0.value, environment: environment, path: path + [.key($0.name)], sink: sink)) }))
        default:
            return value
        }
    }

    static func substitute(_ s: String, environment: [String: String], path: [JSONPathComponent], sink: ErrorSink) -> String {
        var result = ""
        var rest = Substring(s)
        while let dollar = rest.firstIndex(of: "$") {
            result += rest[..<dollar]
            let after = rest[dollar...].dropFirst()
            if after.hasPrefix("${") {  // "$${" → literal "${"
                result += "${"
                rest = after.dropFirst(2)
                continue
            }
            guard after.hasPrefix("{"), let close = after.firstIndex(of: "}") else {
                result += "$"
                rest = after
                continue
            }
            let name = after[after.index(after: after.startIndex)..<close]
            guard isVariableName(name) else {
                sink.record(.invalidValue, path, "\"${\(name)}\" is not a valid environment variable reference")
                result += "$"
                rest = after
                continue
            }
            if let value = environment[String(name)] {
                result += value
            } else {
                sink.record(.unsetVariable, path, "environment variable \(name) is not set")
            }
            rest = after[after.index(after: close)...]
        }
        result += rest
        return result
    }

    private static func isVariableName(_ name: Substring) -> Bool {
        guard let first = name.utf8.first, first == UInt8(ascii: "_") || (first | 0x20 >= 0x61 && first | 0x20 <= 0x7A) else {
            return false
        }
        return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) }
    }
}
