/// One step of a JSON path: a member name or an array index.
public enum JSONPathComponent: Sendable, Hashable {
    case key(String)
    case index(Int)
}

extension [JSONPathComponent] {
    /// The path in the dotted form used in every error message: `routes[2].upstream`, `$` for the root.
    public var jsonPathString: String {
        var result = ""
        for component in self {
            switch component {
            case .index(let i):
                result += "[\(i)]"
            case .key(let name):
                if name.utf8.allSatisfy({
                    $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || ($0 >= 0x30 && $0 <= 0x39)
                        || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A)
                }),
                    !name.isEmpty
                {
                    result += result.isEmpty ? name : ".\(name)"
                } else {
                    result += "[\(JSONWriter.quoted(name))]"
                }
            }
        }
        return result.isEmpty ? "$" : result
    }
}

/// A JSON syntax or policy error, with the path and byte offset where it happened.
public struct JSONError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Stable error codes.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public static let syntax = Code(rawValue: "json_syntax")
        public static let duplicateKey = Code(rawValue: "json_duplicate_key")
        public static let tooDeep = Code(rawValue: "json_too_deep")
        public static let tooLarge = Code(rawValue: "json_too_large")
        public static let invalidUTF8 = Code(rawValue: "json_invalid_utf8")
        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String
    public var offset: Int
    public var path: [JSONPathComponent]

    public init(code: Code, message: String, offset: Int, path: [JSONPathComponent]) {
        self.code = code
        self.message = message
        self.offset = offset
        self.path = path
    }

    public var description: String {
        "\(path.jsonPathString): \(message) (at byte \(offset))"
    }
}
