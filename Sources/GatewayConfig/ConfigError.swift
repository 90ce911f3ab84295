/// A problem in `gateway.json`, located by its JSON path (`routes[2].upstream: no upstream named "ap"`).
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Stable codes, so tooling can tell kinds of problem apart.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public static let syntax = Code("config_syntax")
        public static let unknownKey = Code("config_unknown_key")
        public static let missingKey = Code("config_missing_key")
        public static let wrongType = Code("config_wrong_type")
        public static let invalidValue = Code("config_invalid_value")
        public static let unsetVariable = Code("config_unset_variable")
        public static let unreadableFile = Code("config_unreadable_file")
        public var description: String { rawValue }
    }

    public var code: Code
    /// JSON path of the offending value, `$` for the whole document.
    public var path: String
    public var message: String

    public init(_ code: Code, path: String, _ message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

/// Every problem found in one configuration, in document order.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) { self.errors = errors }

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
