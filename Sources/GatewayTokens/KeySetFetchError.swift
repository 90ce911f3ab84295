/// Why fetching a remote key set failed. `code` is stable (logs, metrics labels); `message` is safe to log: it never
/// holds response bytes, only URLs from the configuration or the issuer's metadata, status codes and sizes.
public struct KeySetFetchError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// Could not connect, TLS failure, reset.
        public static let unreachable = Code(rawValue: "unreachable")
        /// The whole fetch took longer than the fetch timeout.
        public static let timeout = Code(rawValue: "timeout")
        /// A status other than 200 (redirects are not followed).
        public static let httpStatus = Code(rawValue: "http_status")
        /// The document is larger than the size bound.
        public static let tooLarge = Code(rawValue: "too_large")
        /// The issuer's metadata is unusable (not JSON, another issuer, no or a disallowed `jwks_uri`).
        public static let discoveryInvalid = Code(rawValue: "discovery_invalid")
        /// The key set is not a JSON object with a "keys" array.
        public static let jwksInvalid = Code(rawValue: "jwks_invalid")
        /// The key set parsed, but not one key in it is usable.
        public static let noUsableKeys = Code(rawValue: "no_usable_keys")

        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
